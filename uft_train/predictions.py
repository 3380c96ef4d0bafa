"""`eval_predictions.parquet`: the final evaluation's implicit reward for every test example.

One row per tokenized test example, in test-split order, for calibration plots (`uft-train report`)
and error analysis: join on `id` with the mixture's test split for the text. Written by rank 0
only, at the end of a run, for losses with an implicit reward (not `sft`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from uft_train.data import Example
from uftdata.atomic import atomic_path

if TYPE_CHECKING:  # `uft-train report` reads the file without importing torch
    import torch

PREDICTIONS = "eval_predictions.parquet"

SCHEMA = pl.Schema({
    "id": pl.String,         # the mixture row's id
    "source": pl.String,
    "kind": pl.String,
    "score": pl.Float32,     # the target
    "label": pl.Boolean,     # pairwise / binary rows; null otherwise
    "pair_id": pl.String,    # pairwise rows; null otherwise
    "reward": pl.Float32,    # r = beta * (logp_policy - logp_ref), completion log-probs summed
    "step": pl.Int32,        # optimizer steps taken when evaluated (0: the untrained policy, r = 0)
})


def prediction_frame(examples: Sequence[Example], rewards: torch.Tensor, *, step: int) -> pl.DataFrame:
    """One row per example; `rewards` is `[len(examples)]`, in the same order."""
    if rewards.shape != (len(examples),):
        raise ValueError(f"{len(examples)} examples but rewards of shape {tuple(rewards.shape)}")
    return pl.DataFrame({
        "id": [e.id for e in examples],
        "source": [e.source for e in examples],
        "kind": [e.kind for e in examples],
        "score": [e.score for e in examples],
        "label": [e.label for e in examples],
        "pair_id": [e.pair_id for e in examples],
        "reward": rewards.detach().float().cpu().numpy(),
        "step": [step] * len(examples),
    }, schema=SCHEMA)


def write_predictions(frame: pl.DataFrame, path: Path) -> Path:
    """Into a run folder (ours: it holds run.json), replacing the file of a run killed between it and
    the adapter."""
    with atomic_path(path, overwrite=True) as tmp:
        frame.write_parquet(tmp)
    return path
