"""KTO's KL estimate pairs each prompt with another row's completion (docs/design.md, KTO); the loop
computes it for every loss whose table entry `needs_kl`."""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist

from uft_train import losses
from uft_train.batching import GlobalBatch, single_rows, split_batch
from uft_train.data import Example
from uft_train.step import Run, forward


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


def swap_completion(prompt_of: Example, completion_of: Example, *, max_length: int) -> Example:
    """`prompt_of`'s prompt tokens followed by `completion_of`'s completion tokens, the borrowed
    completion cut at its end so that the row keeps `data.max_length` (both rows obey it, their mix
    need not). The prompt is kept whole: it already obeys `data.max_prompt_length`, which is below
    `data.max_length`, so at least one completion token remains.

    This is TRL's rule (TRL 1.16, `trl/trainer/kto_trainer.py`): `KTOTrainer` gives each row
    `KL_completion_ids`, the completions rotated by one within a batch, and
    `DataCollatorForUnpairedPreference.torch_call` builds `prompt_ids + KL_completion_ids` and cuts
    it to `full_ids[: max_length]`, the same right truncation as its matched rows (`KTOConfig` has no
    `max_prompt_length`); it never skips a KL row.

    Token-level splicing is exact because every row is its rendered prompt's tokens followed by its
    rendered completion's, each tokenized on its own (`data.tokenize_split`): the spliced row is
    exactly how that prompt and that completion tokenize together."""
    room = max(0, max_length - prompt_of.prompt_len)
    completion = completion_of.input_ids[completion_of.prompt_len:][:room]
    return dataclasses.replace(prompt_of, input_ids=prompt_of.input_ids[: prompt_of.prompt_len] + completion)


def kto_kl(run: Run, batch: GlobalBatch, step: int) -> torch.Tensor:
    """KL estimate over the step's global batch: each prompt with the completion of its partner in
    a seeded derangement fixed before the batch is split, no gradient, averaged over all ranks
    (docs/design.md, KTO). Its reference is always computed online: the cache holds matched rows."""
    rows = batch.rows
    partners = derangement(len(rows), seed=run.recipe.train.seed * 1_000_003 + step)
    mine = split_batch(single_rows(range(len(rows))), micro_batch_size=run.recipe.train.micro_batch_size,
                       world_size=run.world, rank=run.rank)
    total = torch.zeros(2, device=run.device, dtype=torch.float64)
    for micro in mine:
        total += _log_ratio_sum(run, [(run.train[rows[i]], run.train[rows[partners[i]]]) for i in micro.rows])
    if run.world > 1:
        dist.all_reduce(total)
    return losses.kto_kl(total[0], total[1]).float()


def eval_kto_kl(run: Run) -> torch.Tensor:
    """KL estimate of the test split, so that `eval/loss` is the training objective: each test row's
    prompt with its partner's completion in one derangement of the whole split, seeded by
    `train.seed` alone (every evaluation of a run uses the same partners, so evaluations compare).
    Every rank evaluates the whole test split, so there is nothing to reduce."""
    rows = run.test
    if len(rows) < 2:
        return torch.zeros((), device=run.device)
    partners = derangement(len(rows), seed=run.recipe.train.seed)
    size = run.recipe.train.micro_batch_size
    total = torch.zeros(2, device=run.device, dtype=torch.float64)
    for start in range(0, len(rows), size):
        total += _log_ratio_sum(run, [(rows[i], rows[partners[i]]) for i in range(start, min(start + size, len(rows)))])
    return losses.kto_kl(total[0], total[1]).float()


def _log_ratio_sum(run: Run, pairs: list[tuple[Example, Example]]) -> torch.Tensor:
    """`[sum of logp - logp_ref, count]` (float64) over the mismatched rows of (prompt row, completion row)."""
    max_length = run.recipe.data.max_length
    mismatched = [swap_completion(prompt_of, completion_of, max_length=max_length) for prompt_of, completion_of in pairs]
    policy, ref = forward(run, mismatched, grad=False, cached_reference=False)
    if ref is None:  # the table gives needs_kl only to losses with a reference
        raise ValueError(f"{run.recipe.loss.name}: a KL estimate needs reference log-probs")
    return torch.stack([(policy - ref).double().sum(), torch.tensor(len(pairs), device=run.device, dtype=torch.float64)])
