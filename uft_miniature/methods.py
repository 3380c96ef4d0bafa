"""The benchmark's methods and sizes: which recipe trains what, on which base, how big the world is.

Every method is a recipe in `recipes/miniature/` (hyperparameters fixed there, before any run); the
runner only adds what varies per run: the base model folder, the seed, the output folder, the
stage-1 adapter of a second stage, and, at the smoke size, a step cap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uft_miniature.world import WorldConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "miniature"


@dataclass(frozen=True)
class Method:
    name: str
    """Row of the results table."""
    recipe: str | None
    """File in recipes/miniature/; None for the base model (evaluated, not trained)."""
    after: str | None = None
    """Stage-1 method whose adapter this second stage starts from (merged into the base)."""
    ratio: float | None = None
    """Instruction rows per rated row of the UFT mixture (the ratio sweep's x axis)."""


METHODS = (
    Method("base", None),
    Method("sft", "sft.yaml"),
    Method("uft_instruction_only", "uft_instruction_only.yaml"),
    Method("sft_then_dpo", "sft_then_dpo.yaml", after="sft"),
    Method("sft_then_kto", "sft_then_kto.yaml", after="sft"),
    Method("sft_then_una", "sft_then_una.yaml", after="sft"),
    Method("uft", "uft.yaml", ratio=1.0),
)
# The paper's UltraChat sizes 16k, 32k, 65k, 130k, 260k against HelpSteer2's 20k (20k:20k is `uft`).
GRID = tuple(Method(f"uft_ratio_{r:g}", f"uft_ratio_{r:g}.yaml", ratio=r) for r in (0.8, 1.6, 3.25, 6.5, 13.0))


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
    seeds: tuple[int, ...] = (0, 1, 2)
    grid: bool = True
    max_steps: int | None = None
    """A cap on every run's steps (the smoke size only); None trains the recipes' full epochs."""
    eval_batch_size: int = 64
    methods: tuple[Method, ...] = field(default=METHODS)

    def all_methods(self) -> tuple[Method, ...]:
        return self.methods + (GRID if self.grid else ())
