"""One seeded sampler for all ranks: units -> global batches -> rank shares -> micro-batches -> model inputs.

Every rank computes the same global batches from (seed, epoch) alone, then takes its own share, so
DDP and gradient accumulation only change where a term is computed, never which terms a step has
(docs/design.md, "Reduction"). A resumed run recomputes the same schedule.

- A `Unit` is what must stay together: the two rows of a pair (chosen first), or one row. It
  counts as 1 term, or 2 for a pair whose rows are separate terms (`pairs_as_one_term=False`).
- A `GlobalBatch` is one optimizer step's units; a `MicroBatch` one forward pass on one rank: its
  rows and where its pairs are; `uft_train.logps.layout` makes its model inputs.
- `batch_size` and `micro_batch_size` count terms, like the loss denominator.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from uft_train.data import Example

GROUP_WINDOW_BATCHES = 50  # length grouping sorts windows of ~50 batches' worth of units
LOOKAHEAD_UNITS = 64       # how far a batch with one free term looks for a one-term unit


@dataclass(frozen=True)
class Unit:
    """Rows that must share a micro-batch: a pair `(chosen, rejected)` or one row; and the number of
    loss terms they give (a pair: 1 where the loss pairs rows, else 2)."""

    rows: tuple[int, ...]
    terms: int

    @property
    def is_pair(self) -> bool:
        return len(self.rows) == 2


@dataclass(frozen=True)
class GlobalBatch:
    """One optimizer step's units, on every rank the same."""

    units: tuple[Unit, ...]

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(i for unit in self.units for i in unit.rows)

    @property
    def terms(self) -> int:
        return sum(unit.terms for unit in self.units)


@dataclass(frozen=True)
class MicroBatch:
    """One forward pass: row positions in the split, and where its pairs are, located once here
    (`(chosen, rejected)` positions in `rows`) for the loss terms and the pair metrics."""

    rows: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]


def single_rows(rows: Iterable[int]) -> GlobalBatch:
    """A global batch of rows that are one term each, with no pairs (KTO's mismatched rows)."""
    return GlobalBatch(tuple(Unit((i,), 1) for i in rows))


def make_units(examples: Sequence[Example], *, pairs_as_one_term: bool) -> list[Unit]:
    """Units in order of first row: each pair (chosen, rejected) as one, every other row alone."""
    slots: list[list[int]] = []
    pair_slot: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        if example.pair_id is None:
            slots.append([i])
        elif example.pair_id in pair_slot:
            pair_slot[example.pair_id].append(i)
        else:
            pair_slot[example.pair_id] = [i]
            slots.append(pair_slot[example.pair_id])
    units = []
    for rows in slots:
        if len(rows) == 1 and examples[rows[0]].pair_id is None:
            units.append(Unit((rows[0],), 1))
            continue
        chosen = [r for r in rows if examples[r].label]
        if len(rows) != 2 or len(chosen) != 1:  # tokenize_split drops such pairs, so this is a bug
            raise ValueError(f"pair {examples[rows[0]].pair_id} has rows {rows} with {len(chosen)} chosen; "
                             "expected 2 rows, 1 chosen")
        rejected = [r for r in rows if r != chosen[0]]
        units.append(Unit((chosen[0], rejected[0]), 1 if pairs_as_one_term else 2))
    return units


def batch_size_problems(batch_size: int, micro_batch_size: int, world_size: int, *,
                        pairs_as_one_term: bool) -> list[str]:
    """What makes these sizes unusable, one message each (empty: usable for any data).

    With two-term pairs every rank's share must be able to hold a whole pair even when a batch is
    all pairs, so `batch_size` must be at least 2 x world size; `split_batch` raises otherwise.
    """
    unit_terms = 1 if pairs_as_one_term else 2
    problems = []
    if micro_batch_size < 1:
        problems.append(f"train.micro_batch_size must be at least 1 (got {micro_batch_size})")
    if batch_size < unit_terms * world_size:
        what = "one term" if pairs_as_one_term else "one pair (2 terms: this loss trains each row of a pair)"
        problems.append(f"train.batch_size must be at least {unit_terms * world_size} (got {batch_size}): "
                        f"each of {world_size} rank(s) needs at least {what}")
    elif batch_size % world_size:
        problems.append(f"train.batch_size must be a multiple of the world size {world_size} (got {batch_size})")
    return problems


def global_batches(examples: Sequence[Example], units: Sequence[Unit], *, batch_size: int, seed: int,
                   epoch: int, length_grouping: bool = True) -> list[GlobalBatch]:
    """The epoch's global batches of `batch_size` terms, a pure function of (seed, epoch).

    Units are shuffled; with length grouping, each window of ~50 batches' worth is sorted by length
    before batches are cut, and the batch order is shuffled again, so padding is small and the order
    still random. The last incomplete batch is dropped unless it is the only one: the rows dropped
    this epoch are `len(examples) - sum(len(batch.rows) for batch in batches)`. A batch ends one term short only when a
    two-term pair cannot fit and no one-term unit is within LOOKAHEAD_UNITS.
    """
    if not units:
        return []
    if batch_size < max(unit.terms for unit in units):
        raise ValueError(f"train.batch_size: {batch_size} cannot hold a pair of 2 terms; expected at least 2")
    generator = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
    order = torch.randperm(len(units), generator=generator).tolist()
    if length_grouping:
        length = [max(len(examples[i].input_ids) for i in unit.rows) for unit in units]
        window = GROUP_WINDOW_BATCHES * batch_size
        # Stable sort: equal lengths keep their shuffled order.
        order = [u for start in range(0, len(order), window)
                 for u in sorted(order[start:start + window], key=lambda u: -length[u])]
    cut = _cut(order, [unit.terms for unit in units], batch_size)
    if len(cut) > 1 and sum(units[u].terms for u in cut[-1]) < batch_size:
        cut.pop()
    if length_grouping:
        cut = [cut[b] for b in torch.randperm(len(cut), generator=generator).tolist()]
    return [GlobalBatch(tuple(units[u] for u in batch)) for batch in cut]


def _epoch_seed(seed: int, epoch: int) -> int:
    # A hash, not seed + epoch: (seed 0, epoch 1) and (seed 1, epoch 0) must not share an order.
    return int.from_bytes(hashlib.sha256(f"uft-sampler/{seed}/{epoch}".encode()).digest()[:8], "little") >> 1


def _cut(order: list[int], terms: list[int], batch_size: int) -> list[list[int]]:
    """Consecutive units filling batches of `batch_size` terms; a unit that does not fit waits for
    the next batch while later units fill the gap."""
    batches: list[list[int]] = []
    queue = order[::-1]  # a stack: pop() takes the next unit
    while queue:
        batch: list[int] = []
        waiting: list[int] = []
        filled = 0
        while queue and filled < batch_size and len(waiting) < LOOKAHEAD_UNITS:
            unit = queue.pop()
            if filled + terms[unit] <= batch_size:
                batch.append(unit)
                filled += terms[unit]
            else:
                waiting.append(unit)
        queue.extend(reversed(waiting))
        batches.append(batch)
    return batches


def split_batch(batch: GlobalBatch, *, micro_batch_size: int, world_size: int, rank: int) -> list[MicroBatch]:
    """Rank `rank`'s micro-batches of a global batch: a contiguous share, cut into micro-batches.

    Pairs stay whole. Every rank gets the same number of micro-batches (DDP runs one backward per
    micro-batch on every rank), none empty, each of at most `micro_batch_size` terms where whole
    pairs allow it.
    """
    units = list(batch.units)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if len(units) < world_size:
        raise ValueError(f"a global batch of {len(units)} units cannot be shared by {world_size} ranks; "
                         "raise train.batch_size or add data")
    shares = _contiguous(units, world_size)
    n_micro = max(math.ceil(sum(u.terms for u in share) / micro_batch_size) for share in shares)
    n_micro = min(n_micro, *(len(share) for share in shares))
    return [micro_batch(group) for group in _contiguous(shares[rank], n_micro)]


def chunk_units(units: Sequence[Unit], size: int) -> list[MicroBatch]:
    """Consecutive units packed into micro-batches of at most `size` rows; a pair is never split."""
    chunks: list[list[Unit]] = [[]]
    for unit in units:
        if chunks[-1] and sum(len(u.rows) for u in chunks[-1]) + len(unit.rows) > size:
            chunks.append([])
        chunks[-1].append(unit)
    return [micro_batch(chunk) for chunk in chunks if chunk]


def micro_batch(units: Iterable[Unit]) -> MicroBatch:
    """The units' rows in order, and the positions of their pairs among them."""
    rows: list[int] = []
    pairs: list[tuple[int, int]] = []
    for unit in units:
        if unit.is_pair:
            pairs.append((len(rows), len(rows) + 1))
        rows.extend(unit.rows)
    return MicroBatch(tuple(rows), tuple(pairs))


def _contiguous(units: list[Unit], k: int) -> list[list[Unit]]:
    """`units` cut into `k` non-empty consecutive groups of about equal terms (len(units) >= k)."""
    total = sum(unit.terms for unit in units)
    groups: list[list[Unit]] = []
    i = cum = 0
    for g in range(k):
        target = total * (g + 1) / k
        group: list[Unit] = []
        # A unit joins the group whose term range holds its midpoint; each later group keeps one.
        while i < len(units) - (k - g - 1) and (not group or g == k - 1 or cum + units[i].terms / 2 <= target):
            group.append(units[i])
            cum += units[i].terms
            i += 1
        groups.append(group)
    return groups
