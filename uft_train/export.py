"""`uft-train export RUN_DIR -o OUT`: the base model with the run's adapter merged, as safetensors
with the tokenizer, ready for evaluation harnesses and inference servers."""

from __future__ import annotations

from pathlib import Path

from peft import PeftModel

from uft_train.config import load_recipe
from uft_train.model import load_tokenizer_and_model, quiet_peft
from uftdata.atomic import atomic_path
from uftdata.errors import UftDataError


def export_run(run_dir: Path, out: Path) -> Path:
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise UftDataError(str(adapter), "holds no finished adapter", fix="Export a run that completed.")
    recipe = load_recipe(run_dir / "recipe.yaml")  # the resolved recipe the run saved
    tokenizer, base = load_tokenizer_and_model(recipe, run_dir / "tokenizer")
    with quiet_peft():
        merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    with atomic_path(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out
