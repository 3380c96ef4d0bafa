"""The paper's protocol in miniature: every method at its own best setting, chosen on held-out
questions, then compared over seeds at that setting.

The grids were fixed before any run, by one rule: the paper's values (its appendix Tables 10-13
for SFT and UFT; the papers' settings of DPO, KTO, UNA, ORPO and DPO+NLL) times K = 20, the one
factor of recipes/miniature/README.md. Where the paper states a grid (SFT's learning rates, UFT's
betas) it is taken whole; where it states only a setting, the grid steps by x3 around it: one
step below and two above for four points (`STEPS_4`), two either side for five (`STEPS_5`).

Selection criterion, stated before running: the mean known reward of the greedy answers to the
selection questions (world pool `selection`, disjoint from the test questions), ties broken by
accuracy, then by the earlier grid point. One seed for selection; the comparison uses every seed
at the pick (its first seed is the selection run itself).

A pick at the grid's smallest or largest learning rate says the best may lie beyond it: the grid
then grows by one x3 step past that edge (at the pick's beta) and the pick is made again, at most
`Protocol.extend` times (`extension`). This rule was added after the first default run, in which
four of the eight picks sat at an edge; the grids' centres and points are as fixed before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

K = 20
"""Every learning rate is the paper's times K (recipes/miniature/README.md)."""
STEPS_4 = (1 / 3, 1.0, 3.0, 9.0)
STEPS_5 = (1 / 9, 1 / 3, 1.0, 3.0, 9.0)


def scaled(value: float) -> float:
    """`value` with the float noise of a product removed (20 * 3e-6 is 6.000000000000001e-05)."""
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class Point:
    """One setting of a grid: what it overrides in its recipe."""

    lr: float
    beta: float | None = None

    @property
    def tag(self) -> str:
        """Folder name of the setting: `lr0.0006_beta0.01`."""
        return f"lr{self.lr:g}" + ("" if self.beta is None else f"_beta{self.beta:g}")

    def overrides(self) -> list[str]:
        return [f"optim.lr={self.lr!r}"] + ([] if self.beta is None else [f"loss.beta={self.beta!r}"])


@dataclass(frozen=True)
class Stage:
    """A method selected over its own grid: a row of the final table."""

    name: str
    recipe: str
    """File in recipes/miniature/."""
    lrs: tuple[float, ...]
    """The paper's learning rates (times K here), or, with `around`, factors of that stage's pick."""
    betas: tuple[float | None, ...] = (None,)
    around: str | None = None
    """The stage whose pick this grid is centred on (its beta kept, its lr times `lrs`)."""
    after: str | None = None
    """The stage whose picked adapter (same seed) this second stage starts from."""
    source: str = ""
    """Where the grid's values come from."""


@dataclass(frozen=True)
class Protocol:
    stages: tuple[Stage, ...]
    ratios: tuple[float, ...]
    """The sweep's instruction:rated ratios besides 1:1 (recipes uft_ratio_R.yaml), at `uft`'s pick."""
    controls: bool = True
    """The equal-steps controls: 13:1 stopped at 1:1's steps, and 1:1 run for 13:1's steps."""
    extend: int = 2
    """Points a grid may grow by past an edge pick (`extension`)."""


def grid(stage: Stage, picks: Mapping[str, Point]) -> tuple[Point, ...]:
    """The stage's settings in grid order (learning rate outer, beta inner)."""
    if stage.around is not None:
        centre = picks[stage.around]
        return tuple(Point(scaled(centre.lr * f), centre.beta) for f in stage.lrs)
    return tuple(Point(scaled(K * lr), beta) for lr in stage.lrs for beta in stage.betas)


def pick(points: Sequence[Point], scores: Mapping[Point, Mapping[str, float]]) -> Point:
    """The selection criterion: highest mean reward, then accuracy, then the earlier point."""
    return max(points, key=lambda p: (scores[p]["reward"], scores[p]["accuracy"], -points.index(p)))


def at_edge(points: Sequence[Point], chosen: Point) -> bool:
    """True when the pick is the grid's smallest or largest learning rate (the best may lie beyond)."""
    lrs = sorted({p.lr for p in points})
    return len(lrs) > 1 and chosen.lr in (lrs[0], lrs[-1])


def extension(points: Sequence[Point], chosen: Point) -> Point | None:
    """The next point past the edge the pick sits at (its lr x3 or /3, its beta), or None if inside."""
    if not at_edge(points, chosen):
        return None
    step = 3.0 if chosen.lr == max(p.lr for p in points) else 1 / 3
    return Point(scaled(chosen.lr * step), chosen.beta)


def _around(paper_lr: float, steps: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(paper_lr * s for s in steps)


PAPER = Protocol(
    stages=(
        Stage("sft", "sft.yaml", (3e-6, 1e-5, 3e-5, 1e-4, 3e-4),
              source="UFT paper Tables 10-11: 3e-6 ... 3e-4"),
        Stage("uft_instruction_only", "uft_instruction_only.yaml", _around(3e-5, STEPS_4), (0.01, 0.03, 0.1, 0.3),
              source="UFT paper Tables 12-13: best lr 3e-5 (x3 steps around it), beta 0.01 ... 0.3"),
        Stage("uft", "uft.yaml", STEPS_5, around="uft_instruction_only",
              source="UFT on instruction data's pick, lr x 1/9 ... 9"),
        Stage("sft_then_dpo", "sft_then_dpo.yaml", _around(5e-6, STEPS_4), (0.03,), after="sft",
              source="UFT paper's DPO: lr 5e-6, beta 0.03"),
        Stage("sft_then_kto", "sft_then_kto.yaml", _around(5e-6, STEPS_4), (0.03,), after="sft",
              source="UFT paper's KTO: lr 5e-6, beta 0.03"),
        Stage("sft_then_una", "sft_then_una.yaml", _around(3e-5, STEPS_4), (0.03,), after="sft",
              source="UNA paper's score setting: lr 3e-5, beta 0.03"),
        Stage("orpo", "orpo.yaml", _around(5e-6, STEPS_4),
              source="ORPO paper (Mistral-ORPO): lr 5e-6, lambda 0.1"),
        Stage("dpo_nll", "dpo_nll.yaml", _around(5e-6, STEPS_4), (0.1,),
              source="RPO (DPO+NLL): DPO's lr 5e-6, beta 0.1, alpha 1"),
    ),
    ratios=(0.8, 1.6, 3.25, 6.5, 13.0),
)

# The test suite's: every kind of stage and grid, a few points each.
SMOKE = Protocol(
    stages=(
        Stage("sft", "sft.yaml", (3e-5, 1e-4)),
        Stage("uft_instruction_only", "uft_instruction_only.yaml", (3e-5,), (0.01, 0.1)),
        Stage("uft", "uft.yaml", (1.0, 3.0), around="uft_instruction_only"),
        Stage("sft_then_dpo", "sft_then_dpo.yaml", (5e-6,), (0.03,), after="sft"),
        Stage("sft_then_kto", "sft_then_kto.yaml", (5e-6,), (0.03,), after="sft"),
        Stage("sft_then_una", "sft_then_una.yaml", (3e-5,), (0.03,), after="sft"),
        Stage("orpo", "orpo.yaml", (5e-6,)),
        Stage("dpo_nll", "dpo_nll.yaml", (5e-6,), (0.1,)),
    ),
    ratios=(13.0,),
    extend=1,
)
