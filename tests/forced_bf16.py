"""`uft-train` with the bf16 path a CUDA GPU takes forced on CPU: bf16 autocast and, under FSDP, the
mixed-precision policy (bf16 all-gathers, float32 gradient reduction). tests/test_train_fsdp.py runs
it under torchrun: CI has no GPU, and this is the code path every GPU run takes."""

from __future__ import annotations

import sys

import torch

import uft_train.step as step
import uft_train.train as train
from uft_train.config import Recipe


def bf16_everywhere(recipe: Recipe, device: torch.device) -> bool:
    return recipe.train.autocast_bf16


def force() -> None:
    step.bf16_compute = bf16_everywhere
    train.bf16_compute = bf16_everywhere


if __name__ == "__main__":
    from uft_train.cli import main

    force()
    sys.exit(main(sys.argv[1:]))
