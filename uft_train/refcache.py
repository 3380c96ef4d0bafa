"""Precomputed reference log-probs (`loss.reference: precompute`), cached per row outside the mixture
(docs/design.md, "Reference cache").

A store is `${UFT_CACHE:-~/.cache/uft}/refs/<sha256 of the settings>/`: `settings.json` (what the
reference is: model, adapter, dtype, template, tokenizer, lengths, autocast) and `segments/*.safetensors`,
each the rows one run computed: `ids` (uint8 [N, 16], the row id's 16 bytes), `tokens` (uint8 [N, 16],
a digest of the row's tokens), `logps` (float32 [N]), with the sha256 of those tensors in its
metadata. A row is found by (id, tokens), so mixtures that share rows share their log-probs: the
paper's grid mixtures of one seed are nested, and after the largest all the others are hits.

Each row is computed alone (one sequence per forward), so its value never depends on the rows it
was batched with, and a run's results do not depend on which mixture filled the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from uft_train.config import Recipe
from uft_train.data import Example
from uft_train.logps import layout
from uft_train.model import model_fingerprint
from uft_train.step import ReferenceCache, Run, bf16_autocast, reference_logps, row_key
from uftdata.atomic import atomic_path
from uftdata.errors import UftDataError

FORMAT = "uft reference cache segment"
FORMAT_VERSION = "1"
TENSORS = ("ids", "tokens", "logps")  # the order the sha256 reads them in


def cache_root() -> Path:
    return Path(os.environ.get("UFT_CACHE", Path.home() / ".cache" / "uft"))


def settings(run: Run, recipe: Recipe, tokenizer_dir: Path) -> dict[str, object]:
    """Everything a row's reference log-prob depends on besides the row: not the mixture, its
    kinds or the loss (they choose rows, not what a row's log-prob is)."""
    return {
        "format_version": FORMAT_VERSION,
        **model_fingerprint(recipe, tokenizer_dir),
        # The checkpoint identity's model.* sha256s (config, sampled weights, tokenizer, init adapter):
        # a Hub model's name and revision alone do not pin a local folder's weights.
        **{key: value for key, value in sorted(run.identity.items()) if key.startswith("model.")},
        "max_length": recipe.data.max_length,
        "max_prompt_length": recipe.data.max_prompt_length,
        "truncation": recipe.data.truncation,
        # The reference's precision is part of what the log-probs are (bf16 autocast on a GPU, not on CPU).
        "bf16_autocast": bf16_autocast(run),
    }


def store_dir(key: Mapping[str, object]) -> Path:
    text = json.dumps(key, sort_keys=True)
    return cache_root() / "refs" / hashlib.sha256(text.encode()).hexdigest()


def reference_cache(run: Run, recipe: Recipe, tokenizer_dir: Path) -> ReferenceCache:
    """The reference log-probs of every training row: read from the store, the misses computed by
    all ranks (each a share) and written by rank 0 as one new segment.

    Rank 0 alone reads the store and sends what it found: another run may add a segment meanwhile,
    and every rank must use the same values and run the same number of forward passes."""
    key = settings(run, recipe, tokenizer_dir)
    store = store_dir(key)
    wanted = {row_key(e): i for i, e in reversed(list(enumerate(run.train)))}  # each row's first example
    found = {k: v for k, v in read_store(store).items() if k in wanted} if run.rank == 0 else {}
    if run.world > 1:
        shared = [found]
        dist.broadcast_object_list(shared, src=0)
        found = shared[0]
    misses = sorted(i for k, i in wanted.items() if k not in found)
    computed = compute_share(run, [run.train[i] for i in misses[run.rank::run.world]], everyone=misses)
    if run.world > 1:
        shares = [computed] * run.world  # placeholders, replaced by every rank's share
        dist.all_gather_object(shares, computed)
        computed = {k: v for share in shares for k, v in share.items()}
    if run.rank == 0:
        write_segment(store, key, computed)
        print(f"reference cache: {len(wanted) - len(misses)} hits, {len(misses)} misses ({store})", flush=True)
    if run.world > 1:
        dist.barrier()  # the segment is in place before any rank trains
    return ReferenceCache({**found, **computed}, store, hits=len(wanted) - len(misses), misses=len(misses))


def compute_share(run: Run, rows: Sequence[Example], *, everyone: Sequence[int]) -> dict[bytes, float]:
    """This rank's rows' reference log-probs, one row per forward pass (adapter disabled, eval mode,
    the run's autocast: `step.reference_logps`, the online reference's own pass).

    Every rank runs ceil(misses / world) passes: FSDP needs every rank in every forward, so a rank
    with fewer rows repeats one and drops its result."""
    passes = -(-len(everyone) // run.world)
    filler = rows[0] if rows else (run.train[everyone[0]] if everyone else None)
    out: dict[bytes, float] = {}
    run.model.eval()
    for n in range(passes):
        example = rows[n] if n < len(rows) else filler
        assert example is not None  # passes > 0 means there is a miss
        # One sequence, packed whatever train.padding_free says: the same value for every recipe.
        value = reference_logps(run, layout([example], run.pad_id, padding_free=True).to(run.device))
        if n < len(rows):
            out[row_key(example)] = float(value.float().cpu()[0])
    return out


def read_store(store: Path) -> dict[bytes, float]:
    """Every verified row of the store. Segments are read in name order (the name begins with the
    segment's sha256), so a row two segments hold resolves to the same one whatever wrote them when.
    A segment that cannot be read, or whose tensors do not match its sha256, is renamed aside to
    NAME.corrupt and its rows count as misses."""
    rows: dict[bytes, float] = {}
    folder = store / "segments"
    names = sorted(p.name for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    for name in names:
        segment = read_segment(folder / name, store.name)
        if segment is None:
            try:
                os.replace(folder / name, folder / f"{name}.corrupt")
            except FileNotFoundError:  # another run set it aside first
                pass
            continue
        for k, v in segment.items():
            rows.setdefault(k, v)
    return rows


def read_segment(path: Path, settings_sha: str) -> dict[bytes, float] | None:
    """A segment's rows, or None when it does not verify (unreadable, another store's, tampered)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in TENSORS}
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None
    if meta.get("format") != FORMAT or meta.get("settings_sha256") != settings_sha:
        return None
    if meta.get("sha256") != tensors_sha256(tensors):
        return None
    keys = torch.cat([tensors["ids"], tensors["tokens"]], dim=1).numpy()
    return {bytes(k): v for k, v in zip(keys, tensors["logps"].tolist())}


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in TENSORS:
        t = tensors[name].contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def write_segment(store: Path, key: Mapping[str, object], rows: Mapping[bytes, float]) -> Path | None:
    """The rows a run computed as one new segment (None: nothing to write). Rows sorted by key, so
    the same rows give the same bytes; the name, `<sha256>-<random>.safetensors`, is the writer's
    own, so two runs writing one store at once never write the same file."""
    _write_settings(store, key)
    if not rows:
        return None
    keys = sorted(rows)
    packed = torch.tensor([list(k) for k in keys], dtype=torch.uint8)
    tensors = {"ids": packed[:, :16].contiguous(), "tokens": packed[:, 16:].contiguous(),
               "logps": torch.tensor([rows[k] for k in keys], dtype=torch.float32)}
    sha = tensors_sha256(tensors)
    path = store / "segments" / f"{sha}-{uuid.uuid4().hex}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "format_version": FORMAT_VERSION,
                                               "sha256": sha, "settings_sha256": store.name})
    return path


def _write_settings(store: Path, key: Mapping[str, object]) -> None:
    """settings.json, for people: what the store's name is the sha256 of (segments are checked
    against the name, never against this file). Written once: a run that finds another writing it,
    or done, goes on, since both write the same text."""
    path = store / "settings.json"
    if path.is_file():
        return
    with contextlib.suppress(UftDataError):  # atomic_path's refusals: busy, or written meanwhile
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(key, sort_keys=True) + "\n", encoding="utf-8")
