"""What each loss needs, once (docs/design.md, "Loss x kind"): the table the recipe checks and the loop read.

Torch-free, so `uft_train.config` (and `uft-train --dry-run`) can check a recipe against it without
importing torch; each entry names its function by dotted path and the loop resolves it when it runs.
Adding a loss is one entry here and one function in `uft_train.losses`; nothing else branches on a
loss's name (the recipe checks, the loop, the run report and the reference cache read these fields).

A loss function takes tensors positionally and hyperparameters keyword-only, and returns one term
per row (or per pair): `inputs` names its positional arguments, which `uft_train.objective` supplies
by name, and `hyperparameters` its keyword-only ones with their defaults.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from uftdata.schema import Kind

# The recipe's `loss.name` type; the table below has exactly these entries, in this order (checked
# at import), so the allowed names in `--help` and in errors are the table's.
LossName = Literal["una_mse", "una_bce", "dpo", "kto", "sft"]


@dataclass(frozen=True)
class LossSpec:
    """One loss: what its function is, what it trains on and how the loop calls and reduces it.

    fn: the function's dotted name, resolved by `function()` (importing torch only then).
    kinds: the row kinds it trains on; others are a load-time error.
    needs_reference: whether it takes reference log-probs (adapter-disabled pass or the cache);
        only these losses have an implicit reward to log, predict and calibrate.
    inputs: fn's positional tensor arguments, by name (see `uft_train.objective` for each name).
    hyperparameters: fn's keyword-only arguments (the recipe's `loss.*` keys) and their defaults.
    denominator: what a step's summed terms are divided by: its number of terms, or its completion tokens.
    term: what one of fn's terms is: a row, or a (chosen, rejected) pair.
    pairwise_option: `loss.pairwise` may name a pair loss that trains this loss's pairwise rows as
        one pair term each, instead of two row terms.
    needs_kl: fn takes the step's KL reference point (`kl`), estimated on mismatched rows (KTO).
    """

    fn: str
    kinds: frozenset[Kind]
    needs_reference: bool
    inputs: tuple[str, ...]
    hyperparameters: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    denominator: Literal["terms", "tokens"] = "terms"
    term: Literal["row", "pair"] = "row"
    pairwise_option: bool = False
    needs_kl: bool = False

    def function(self) -> Callable[..., Any]:
        """The loss function itself (`uft_train.losses` imports torch: only the loop calls this)."""
        return _resolve(self.fn)


def _hyper(**defaults: float) -> Mapping[str, float]:
    return MappingProxyType(defaults)


_ALL_KINDS: frozenset[Kind] = frozenset(get_args(Kind))
_SCORED = ("policy_logps", "ref_logps", "scores")
_BETA = _hyper(beta=0.01)

# una_* train pairwise rows as two scored rows, or as one DPO term per pair with `loss.pairwise: dpo`;
# kto reads sft rows as desirable and binary/pairwise rows by `label`; sft's term is a summed NLL.
LOSSES: Mapping[str, LossSpec] = MappingProxyType({
    "una_mse": LossSpec("uft_train.losses.una_mse", _ALL_KINDS, True, _SCORED, _BETA, pairwise_option=True),
    "una_bce": LossSpec("uft_train.losses.una_bce", _ALL_KINDS, True, _SCORED, _BETA, pairwise_option=True),
    "dpo": LossSpec("uft_train.losses.dpo", frozenset({"pairwise"}), True,
                    ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
                    _BETA, term="pair"),
    "kto": LossSpec("uft_train.losses.kto", frozenset({"sft", "binary", "pairwise"}), True,
                    ("policy_logps", "ref_logps", "desirable", "kl"),
                    _hyper(beta=0.01, desirable_weight=1.0, undesirable_weight=1.0), needs_kl=True),
    "sft": LossSpec("uft_train.losses.sft", frozenset({"sft"}), False, ("policy_logps", "n_tokens"),
                    denominator="tokens"),
})

if tuple(LOSSES) != get_args(LossName):
    raise ImportError("uft_train.loss_table: LossName must list the table's entries in order")  # a bug here


def get_loss(name: str) -> LossSpec:
    """The table entry for a recipe's `loss.name`; an unknown name is a `ValueError` listing the known ones."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss.name: unknown loss (got {name!r}); expected one of {', '.join(LOSSES)}. "
                         "Set loss.name in the recipe to one of them.")
    return LOSSES[name]


def pair_loss(name: str, pairwise: str) -> LossSpec | None:
    """The loss whose one term each pair of the micro-batch gives, or None when the rows of a pair
    are two row terms: the loss itself where its terms are pairs, else the pair loss `loss.pairwise`
    names where the loss allows that choice ("rows" keeps them as rows)."""
    spec = get_loss(name)
    if spec.term == "pair":
        return spec
    return get_loss(pairwise) if spec.pairwise_option and pairwise != "rows" else None


def row_loss(name: str) -> LossSpec | None:
    """The loss whose one term each row outside a pair term gives (None: the loss trains pairs only)."""
    spec = get_loss(name)
    return spec if spec.term == "row" else None


def pairs_as_one_term(name: str, pairwise: str) -> bool:
    """Whether a pair counts as one term (for batch sizes and the denominator) or as two rows."""
    return pair_loss(name, pairwise) is not None


def shared_default(key: str) -> float:
    """The default of hyperparameter `key`: the recipe has one `loss.<key>` for every loss, so every
    entry that takes `key` must give it the same default (a loss needing another one needs its own key)."""
    defaults = {spec.hyperparameters[key] for spec in LOSSES.values() if key in spec.hyperparameters}
    if len(defaults) != 1:
        raise ValueError(f"loss.{key}: the table's entries give it {len(defaults)} defaults; expected exactly 1")
    return defaults.pop()


def hyperparameter_keys() -> tuple[str, ...]:
    """Every loss's hyperparameters, each once, in table order (the recipe's `loss.*` numbers)."""
    return tuple(dict.fromkeys(key for spec in LOSSES.values() for key in spec.hyperparameters))


def losses_where(test: Callable[[LossSpec], bool]) -> list[str]:
    """The names of the entries for which `test` holds, in table order (for error messages)."""
    return [name for name, spec in LOSSES.items() if test(spec)]


@functools.cache
def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, attribute = dotted.rpartition(".")
    function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return function
