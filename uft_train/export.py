"""`uft-train export RUN_DIR -o OUT`: the base model with the run's adapter merged, as safetensors
with the tokenizer, ready for evaluation harnesses and inference servers.

OUT gets `uft_export.json` (written last): the run, its base model and the adapter's sha256. Only a
folder holding it is replaced, and only with --overwrite (README, "Outputs: what a command may replace").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from uft_train.errors import TrainError
from uftdata.atomic import atomic_path, check_output, give_normal_modes

if TYPE_CHECKING:  # imported when an export runs (see `export_run`)
    from transformers import PreTrainedModel

MARKER = "uft_export.json"
EXPORT_FIX = "Pass --overwrite to replace this earlier export, or choose another -o."


def export_run(run_dir: Path, out: Path, *, overwrite: bool = False) -> Path:
    run_dir, out = Path(run_dir), Path(out)
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise TrainError(str(adapter), "holds no finished adapter", fix="Export a run that completed.")
    # Before the model is loaded (minutes for a 7B model): refuse an output it may not replace.
    check_output(out, overwrite=overwrite, owned=is_export, inputs=[run_dir], fix=EXPORT_FIX)
    # Imported here: torch, transformers and peft take seconds to import, and a refused output
    # should not wait for them.
    from peft import PeftModel

    from uft_train.config import load_recipe
    from uft_train.model import load_tokenizer_and_model, quiet_peft

    recipe = load_recipe(run_dir / "recipe.yaml")  # the resolved recipe the run saved
    # Merging reads weights only: the run's attention kernel (flash attention needs a GPU) is not needed.
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, attn_implementation="sdpa"))
    tokenizer, base = load_tokenizer_and_model(recipe, run_dir / "tokenizer")
    with quiet_peft():
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    with atomic_path(out, overwrite=overwrite, owned=is_export, inputs=[run_dir], fix=EXPORT_FIX) as tmp:
        _save(merged, tmp)
        tokenizer.save_pretrained(tmp)
        give_normal_modes(tmp)  # safetensors writes 0600; the export is meant to be shared
        marker = {"uft_export_version": 1, "run_dir": str(run_dir), "base_model": recipe.model.name,
                  "adapter_sha256": _sha256(adapter / "adapter_model.safetensors")}
        # Written last: a folder holding it is a finished export.
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def is_export(folder: Path) -> bool:
    """A folder `uft-train export` wrote: MARKER, written last, is there."""
    return (folder / MARKER).is_file()


def _save(model: PreTrainedModel, folder: Path) -> None:
    """save_pretrained, with safetensors' I/O failures (a SafetensorError, not an OSError) turned back
    into the OSError they are, so a full disk is one line naming the output."""
    from safetensors import SafetensorError
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    if not sys.stderr.isatty():  # as uftdata's bars: on a terminal only, so logs and errors stay clean
        logging.disable_progress_bar()
    try:
        model.save_pretrained(folder, safe_serialization=True)
    except SafetensorError as error:
        code = re.search(r"os error (\d+)", str(error))
        if code is None:
            raise
        raise OSError(int(code[1]), str(error), str(folder)) from error
    finally:
        if shown:
            logging.enable_progress_bar()


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
