"""A run's step state and its forward passes, below everything that uses them: the loop
(`uft_train.train`), the reference cache (`uft_train.refcache`) and checkpoints (`uft_train.checkpoint`).

`reference_logps` is the one reference pass: each step's online reference and the cached one both
go through it, so the two agree in precision (bf16 autocast on a GPU, none on CPU) and the
implicit reward is 0 at step 0 either way (docs/design.md, "Reference = the policy at the start of the stage").
"""

from __future__ import annotations

import array
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from uft_train.batching import GlobalBatch, Unit, global_batches
from uft_train.config import Recipe
from uft_train.data import Example
from uft_train.logps import Layout, attention_ratio, layout, padded_tokens, sequence_logps
from uft_train.loss_table import LossSpec, get_loss
from uft_train.model import reference


def row_key(example: Example) -> bytes:
    """A row's key in the reference cache: its id (16 bytes; ids hash the text) and the first 16
    bytes of a sha256 of its tokens, since nothing checks that a plain Parquet file's ids hash its
    text (docs/design.md, "Reference cache")."""
    tokens = array.array("q", (example.prompt_len, *example.input_ids)).tobytes()
    return bytes.fromhex(example.id) + hashlib.sha256(tokens).digest()[:16]


@dataclass(frozen=True)
class ReferenceCache:
    """Precomputed reference log-probs of the training rows, by `row_key`; `store` is the folder
    they were read from and written to, `hits` and `misses` the run's distinct rows found there
    and computed (`uft_train.refcache`)."""

    by_key: Mapping[bytes, float]
    store: Path
    hits: int
    misses: int

    def lookup(self, examples: Sequence[Example]) -> torch.Tensor:
        return torch.tensor([self.by_key[row_key(e)] for e in examples], dtype=torch.float32)


@dataclass
class Run:
    """Everything a step needs, built once; `refs` is set once the reference cache is read, and the
    model, optimizer and scheduler change in place as the run trains."""

    recipe: Recipe
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: list[Example]
    test: list[Example]
    units: list[Unit]
    pad_id: int
    device: torch.device
    rank: int = 0
    world: int = 1
    refs: ReferenceCache | None = None
    identity: dict[str, str] = field(default_factory=dict)  # the data's and model's, for checkpoints
    spec: LossSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = get_loss(self.recipe.loss.name)

    def batches(self, epoch: int) -> list[GlobalBatch]:
        return global_batches(self.train, self.units, batch_size=self.recipe.train.batch_size,
                              seed=self.recipe.train.seed, epoch=epoch)

    @functools.cached_property
    def attention(self) -> float | None:
        """How `logps.row_plan` weighs attention when it packs rows: None with flash attention (varlen
        kernels: one row costs no more than separate ones), else the model's `attention_ratio`, since
        sdpa and eager build a dense mask over a packed row."""
        flash = self.recipe.model.attn_implementation.startswith("flash")
        return None if flash else attention_ratio(self.model)

    def layout(self, examples: Sequence[Example]) -> Layout:
        """The micro-batch's model inputs on the run's device (packed unless `train.padding_free` is off)."""
        return layout(examples, self.pad_id, padding_free=self.recipe.train.padding_free,
                      attention=self.attention).to(self.device)

    def padded(self, examples: Sequence[Example]) -> int:
        """The padding slots of the micro-batch's layout, for the `padding_share` metric."""
        return padded_tokens([len(e.input_ids) for e in examples], padding_free=self.recipe.train.padding_free,
                             attention=self.attention)


def bf16_autocast(run: Run) -> bool:
    """Whether the run's forward passes use bf16 autocast: asked for, and the device supports it."""
    return bf16_compute(run.recipe, run.device)


def bf16_compute(recipe: Recipe, device: torch.device) -> bool:
    """`bf16_autocast` before the run exists (FSDP's mixed-precision policy follows it)."""
    return recipe.train.autocast_bf16 and device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(run: Run) -> torch.autocast:
    return torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(run))


def forward(run: Run, examples: Sequence[Example], *, grad: bool,
            cached_reference: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Policy and reference log-probs `[B]` of a micro-batch's examples (the reference from the cache
    if there is one and `cached_reference`; None for a loss without one)."""
    batch = run.layout(examples)
    with torch.set_grad_enabled(grad), autocast(run):
        policy = sequence_logps(run.model, batch)
    if not run.spec.needs_reference:
        return policy, None
    if run.refs is not None and cached_reference:
        return policy, run.refs.lookup(examples).to(run.device)
    return policy, reference_logps(run, batch)


def reference_logps(run: Run, batch: Layout) -> torch.Tensor:
    """The reference's log-probs `[B]` of a micro-batch's layout on the run's device: the adapter
    disabled, no gradient, under the run's autocast."""
    with torch.no_grad(), reference(run.model), autocast(run):
        return sequence_logps(run.model, batch)
