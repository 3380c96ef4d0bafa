"""The benchmark's sizes. `default` is the one whose results docs/miniature/ reports (2 CPU cores,
26 minutes from scratch: docs/miniature.md); `large` is for a CUDA machine; `smoke` is the test
suite's seconds-long run of every step (it measures nothing).

Rated data (the HelpSteer2 analog) is 4 responses to each rated prompt; the instruction data must
hold 13x the rated rows (the sweep's largest ratio, the paper's 260k:20k) plus its test share after
`mix` drops repeated rows (a conversation's first turn repeats a question of the pool; later turns
carry their context and rarely repeat), so `conversations` is sized from the rated pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from uft_miniature.methods import BenchSize
from uft_miniature.protocol import PAPER, SMOKE
from uft_miniature.world import WorldConfig


@dataclass(frozen=True)
class Size:
    bench: BenchSize
    summary: str


SIZES = {
    "smoke": Size(BenchSize("smoke", WorldConfig(entities=12, max_operand=4, validation_share=0.3, dialogue_entities=12),
                            pretrain="tiny", conversations=1000, eval_questions=8, probes=8, protocol=SMOKE, seeds=(0,),
                            max_steps=1, eval_batch_size=16),
                  "a seconds-long run of every step for the tests; measures nothing"),
    "default": Size(BenchSize("default", WorldConfig(rated_share=0.125), pretrain="default", conversations=8500,
                              eval_questions=200, probes=200, protocol=PAPER),
                    "240 entities, 568 rated rows, 51 selection runs, then 3 seeds at the picks; 26 min on 2 CPU cores"),
    "large": Size(BenchSize("large", WorldConfig(entities=960, dialogue_entities=960), pretrain="large",
                            conversations=64000, eval_questions=400, probes=400, protocol=PAPER, eval_batch_size=128),
                  "4x the world and a wider base model, for a CUDA machine"),
}


def default_size() -> str:
    import torch

    return "large" if torch.cuda.is_available() else "default"
