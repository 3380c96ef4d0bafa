"""A step's (or an evaluation's) metrics as named sums over its micro-batches, reduced over ranks by
name, so under DDP the metrics (per kind too) are the global batch's, as in one process.

Every sum has a name in `STAT_KEYS`, a fixed order that every rank packs the same way: a sum for a
kind no row of this rank had is 0, and a kind whose count is 0 everywhere is not reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist

from uft_train.data import Example
from uft_train.objective import Terms
from uftdata.schema import KINDS

# loss: sum of terms; pairs_correct / pairs: pairs whose chosen row has the higher reward / pairs;
# per kind: loss/<kind> over terms/<kind> terms (or over completion/<kind> tokens, for a loss whose
# denominator is tokens), reward/<kind> over rewarded/<kind> rows.
STAT_KEYS: tuple[str, ...] = (
    "loss", "tokens", "tokens_completion", "padded", "pairs_correct", "pairs",
    *(f"{name}/{kind}" for kind in KINDS for name in ("loss", "terms", "completion", "reward", "rewarded")),
)


@dataclass
class StepStats:
    """Named sums (`STAT_KEYS`) of this rank's micro-batches, or of all ranks' after `reduce`."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0.0))

    def add(self, terms: Terms, examples: Sequence[Example], padded: int) -> None:
        """A micro-batch's terms; `padded` is its layout's padding slots (`Run.padded`)."""
        values = terms.values.detach().float()
        self.sums["loss"] += float(values.sum())
        for kind, value in zip(terms.kinds, values.tolist()):
            self.sums[f"loss/{kind}"] += value
            self.sums[f"terms/{kind}"] += 1
        if terms.rewards is not None:
            for example, reward in zip(examples, terms.rewards.tolist()):
                self.sums[f"reward/{example.kind}"] += reward
                self.sums[f"rewarded/{example.kind}"] += 1
        self.sums["pairs_correct"] += sum(terms.pair_correct)
        self.sums["pairs"] += len(terms.pair_correct)
        for example in examples:
            self.sums[f"completion/{example.kind}"] += example.completion_len
        lengths = [len(e.input_ids) for e in examples]
        self.sums["tokens"] += sum(lengths)
        self.sums["tokens_completion"] += sum(e.completion_len for e in examples)
        self.sums["padded"] += padded

    def reduce(self, world: int, device: torch.device) -> StepStats:
        """The sums over all `world` ranks (itself in one process); every rank must call it."""
        if world == 1:
            return self
        # On the run's device: an NCCL process group reduces CUDA tensors only.
        total = torch.tensor([self.sums[key] for key in STAT_KEYS], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return StepStats(dict(zip(STAT_KEYS, total.tolist())))

    @property
    def loss_sum(self) -> float:
        return self.sums["loss"]

    @property
    def tokens(self) -> int:
        return int(self.sums["tokens"])

    @property
    def tokens_completion(self) -> int:
        return int(self.sums["tokens_completion"])

    def padding_share(self) -> float:
        return self.sums["padded"] / max(1, self.sums["tokens"] + self.sums["padded"])

    def by_kind(self, denominator: Literal["terms", "tokens"]) -> dict[str, float]:
        """Each kind's loss in the step loss's unit (per term, or per completion token when the loss's
        `denominator` is tokens, so `loss` is their weighted mean), mean reward per row of each kind
        that has any, and pair accuracy."""
        out: dict[str, float] = {}
        per_loss = "completion" if denominator == "tokens" else "terms"
        for mean, count in (("loss", per_loss), ("reward", "rewarded")):
            for kind in sorted(KINDS):
                if self.sums[f"{count}/{kind}"]:
                    out[f"{mean}/{kind}"] = self.sums[f"{mean}/{kind}"] / self.sums[f"{count}/{kind}"]
        if self.sums["pairs"]:
            out["reward_accuracy/pairwise"] = self.sums["pairs_correct"] / self.sums["pairs"]
        return out
