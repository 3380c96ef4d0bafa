"""KTO's KL estimate pairs each prompt with another row's completion (DESIGN.md, KTO)."""

from __future__ import annotations

import dataclasses

import torch

from uft_train.data import Example


def derangement(n: int, *, seed: int) -> list[int]:
    """A seeded permutation of range(n) with no fixed point (n >= 2): partner j(i) != i.

    Sattolo's algorithm gives a single cycle, hence no fixed point, with torch's seeded generator
    so the partners are the same on every rank and on resume."""
    if n < 2:
        raise ValueError("KTO needs a global batch of at least 2 rows")
    generator = torch.Generator().manual_seed(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=generator))
        order[i], order[j] = order[j], order[i]
    return order


def swap_completion(prompt_of: Example, completion_of: Example) -> Example:
    """`prompt_of`'s prompt tokens followed by `completion_of`'s completion tokens.

    Token-level splicing is exact because the rendered prompt is a token prefix of every row
    (tokenization drops rows where it is not)."""
    ids = prompt_of.input_ids[: prompt_of.prompt_len] + completion_of.input_ids[completion_of.prompt_len:]
    return dataclasses.replace(prompt_of, input_ids=tuple(ids))
