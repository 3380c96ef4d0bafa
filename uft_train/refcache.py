"""Precomputed reference log-probs (`loss.reference: precompute`), cached outside the mixture.

The cache file lives under `${UFT_CACHE:-~/.cache/uft}/refs/`, named by the sha256 of its key:
the mixture's content hash, the model (id and revision, or the tiny model's config), the init
adapter's hash, dtype, template, tokenizer, max lengths and truncation (docs/design.md), and whether the
reference runs under bf16 autocast (as online). The key is also stored inside the file and
compared on load: a mismatch rebuilds, never reuses.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from uft_train.config import Recipe, data_path
from uft_train.model import model_fingerprint
from uft_train.step import ReferenceCache, Run, bf16_autocast, reference_logps
from uftdata.atomic import atomic_path
from uftdata.manifest import read_manifest


def cache_root() -> Path:
    return Path(os.environ.get("UFT_CACHE", Path.home() / ".cache" / "uft"))


def cache_key(recipe: Recipe, tokenizer_dir: Path) -> dict[str, object]:
    folder = data_path(recipe)
    if folder.is_dir():  # a mixture, verified against this manifest before the run began
        content = read_manifest(folder).content_hash
    else:  # a plain Parquet file given as data.path
        content = hashlib.sha256(folder.read_bytes()).hexdigest()
    return {
        "mixture_content_hash": content,
        **model_fingerprint(recipe, tokenizer_dir),
        "max_length": recipe.data.max_length,
        "max_prompt_length": recipe.data.max_prompt_length,
        "truncation": recipe.data.truncation,
        "kinds": list(recipe.data.kinds) if recipe.data.kinds else None,
        "loss_kinds": recipe.loss.name,  # which rows are kept depends on the loss
    }


def reference_cache(run: Run, recipe: Recipe, tokenizer_dir: Path) -> ReferenceCache:
    """The run's cache, read, or computed first (rank 0) when no file holds this key."""
    # The reference's precision is part of what the log-probs are (bf16 autocast on a GPU, not on CPU).
    key = {**cache_key(recipe, tokenizer_dir), "bf16_autocast": bf16_autocast(run)}
    text = json.dumps(key, sort_keys=True)
    path = cache_root() / "refs" / f"{hashlib.sha256(text.encode()).hexdigest()}.safetensors"
    built = False
    if run.rank == 0 and stored_key(path) != text:
        compute(run, path, text)
        built = True
    if run.world > 1:
        dist.barrier()
    with safe_open(str(path), framework="pt") as f:
        by_row = dict(zip(f.get_tensor("rows").tolist(), f.get_tensor("logps").tolist()))
    return ReferenceCache(by_row, path, built)


def stored_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("key")


def compute(run: Run, path: Path, key: str) -> None:
    size = run.recipe.train.micro_batch_size
    rows: list[int] = []
    logps: list[torch.Tensor] = []
    run.model.eval()
    for start in range(0, len(run.train), size):
        examples = run.train[start:start + size]
        # The online reference's own pass (and so its precision), or cached and online differ and
        # r != 0 at step 0.
        logps.append(reference_logps(run, run.layout(examples)).float().cpu())
        rows += [e.row for e in examples]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:  # our cache: a file whose stored key differs is rebuilt
        save_file({"rows": torch.tensor(rows, dtype=torch.int64), "logps": torch.cat(logps)}, str(tmp),
                  metadata={"key": key})
