"""The benchmark's runs and sizes: which recipe trains what, at which setting, on which base.

Every method is a recipe in `recipes/miniature/`; the runner adds only what varies per run: the
base model folder, the grid point's learning rate (and beta), the seed, the output folder, the
stage-1 adapter of a second stage, a step count for the equal-steps controls, and, at the smoke
size, a step cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from uft_miniature.protocol import Point, Protocol
from uft_miniature.world import WorldConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "miniature"


@dataclass(frozen=True)
class Job:
    """One training run."""

    name: str
    """The method (a stage, a ratio of the sweep, a control): the first folder level of runs/."""
    recipe: str
    point: Point
    seed: int
    after: Job | None = None
    """The first stage whose adapter this second stage starts from (merged into the base)."""
    max_steps: int | None = None

    @property
    def folder(self) -> str:
        """runs/<name>/<setting>/seed<S>, relative to the working folder."""
        return f"{self.name}/{self.point.tag}/seed{self.seed}"


@dataclass(frozen=True)
class BenchSize:
    name: str
    world: WorldConfig
    pretrain: str
    """Key of uft_miniature.pretrain.SIZES."""
    conversations: int
    """Raw UltraChat-like conversations (1-3 turns each; unfolded into rows)."""
    eval_questions: int
    probes: int
    protocol: Protocol
    seeds: tuple[int, ...] = (0, 1, 2)
    max_steps: int | None = None
    """A cap on every run's steps (the smoke size only); None trains the recipes' full epochs."""
    eval_batch_size: int = 64


def ratio_name(ratio: float) -> str:
    return f"uft_ratio_{ratio:g}"


def control_names(ratio: float) -> tuple[str, str]:
    """The equal-steps controls of the sweep's `ratio`: that mixture stopped at the 1:1 mixture's step
    count, and the 1:1 mixture trained for that mixture's."""
    return f"{ratio_name(ratio)}_at_1_1_steps", f"uft_at_{ratio:g}_1_steps"

