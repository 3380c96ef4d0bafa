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
LossName = Literal["una_mse", "una_bce", "dpo", "kto", "sft", "orpo", "dpo_nll"]
Pairwise = Literal["rows", "dpo"]  # the recipe's `loss.pairwise` values (null: the loss's default)
ROWS: Pairwise = "rows"  # pairwise rows as two row terms (our extension for una_*)


@dataclass(frozen=True)
class LossSpec:
    """One loss: what its function is, what it trains on and how the loop calls and reduces it.

    fn: the function's dotted name, resolved by `function()` (importing torch only then).
    kinds: the row kinds it trains on; others are a load-time error.
    needs_reference: whether it takes reference log-probs (adapter-disabled pass or the cache);
        only these losses have an implicit reward to log, predict and calibrate.
    inputs: fn's positional tensor arguments, by name (see `uft_train.objective` for each name).
    hyperparameters: every recipe `loss.*` number this loss uses (fn's keyword-only arguments and
        those of the functions it calls for pairs or rows) with the loss's own default: a null
        `loss.<key>` resolves to it (`resolve`).
    denominator: what a step's summed terms are divided by: its number of terms, or its completion tokens.
    term: what one of fn's terms is: a row, or a (chosen, rejected) pair.
    pairwise: the `loss.pairwise` values this loss allows, its default first: `rows` (each pairwise
        row a row term) or the name of the pair loss whose one term each pair gives. Empty: the key
        must stay null.
    rows: where fn's term is a pair, the term each row outside a pair gives (None: the loss trains
        pairs only). Its `fn` takes row inputs and hyperparameters among this loss's.
    needs_kl: fn takes the step's KL reference point (`kl`), estimated on mismatched rows (KTO).
    """

    fn: str
    kinds: frozenset[Kind]
    needs_reference: bool
    inputs: tuple[str, ...]
    hyperparameters: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    denominator: Literal["terms", "tokens"] = "terms"
    term: Literal["row", "pair"] = "row"
    pairwise: tuple[Pairwise, ...] = ()
    rows: LossSpec | None = None
    needs_kl: bool = False

    def function(self) -> Callable[..., Any]:
        """The loss function itself (`uft_train.losses` imports torch: only the loop calls this)."""
        return _resolve(self.fn)


def _hyper(**defaults: float) -> Mapping[str, float]:
    return MappingProxyType(defaults)


_ALL_KINDS: frozenset[Kind] = frozenset(get_args(Kind))
_SCORED = ("policy_logps", "ref_logps", "scores")
_PAIRS = ("policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps")
_ONE_STAGE: frozenset[Kind] = frozenset({"sft", "pairwise"})
# Defaults: UNA/UFT's beta 0.01 for una_*; TRL's 0.1 for dpo and kto (DPOConfig/KTOConfig.beta; the
# papers' second stages set 0.03 in recipes/), ORPO's lambda 0.1 (TRL ORPOConfig.beta), RPO's alpha 1.
_UNA = _hyper(beta=0.01)
_TRL_BETA = 0.1

# una_* train each pair as one DPO term by default (UNA's pairwise case), or as two scored rows with
# `loss.pairwise: rows` (our extension); kto reads sft rows as desirable and binary/pairwise rows by
# `label`; sft's term is a summed NLL; orpo and dpo_nll give a pair term per pair and an NLL term per
# sft row, so each trains in one stage on a UFT mixture.
LOSSES: Mapping[str, LossSpec] = MappingProxyType({
    "una_mse": LossSpec("uft_train.losses.una_mse", _ALL_KINDS, True, _SCORED, _UNA, pairwise=("dpo", ROWS)),
    "una_bce": LossSpec("uft_train.losses.una_bce", _ALL_KINDS, True, _SCORED, _UNA, pairwise=("dpo", ROWS)),
    "dpo": LossSpec("uft_train.losses.dpo", frozenset({"pairwise"}), True, _PAIRS, _hyper(beta=_TRL_BETA), term="pair"),
    "kto": LossSpec("uft_train.losses.kto", frozenset({"sft", "binary", "pairwise"}), True,
                    ("policy_logps", "ref_logps", "desirable", "kl"),
                    _hyper(beta=_TRL_BETA, desirable_weight=1.0, undesirable_weight=1.0), needs_kl=True),
    "sft": LossSpec("uft_train.losses.sft", frozenset({"sft"}), False, ("policy_logps", "n_tokens"),
                    denominator="tokens"),
    "orpo": LossSpec("uft_train.losses.orpo", _ONE_STAGE, False,
                     ("policy_chosen_logps", "policy_rejected_logps", "chosen_n_tokens", "rejected_n_tokens"),
                     _hyper(orpo_lambda=0.1), term="pair",
                     rows=LossSpec("uft_train.losses.orpo_row", frozenset({"sft"}), False, ("policy_logps", "n_tokens"))),
    "dpo_nll": LossSpec("uft_train.losses.dpo_nll", _ONE_STAGE, True, (*_PAIRS, "chosen_n_tokens"),
                        _hyper(beta=_TRL_BETA, nll_alpha=1.0), term="pair",
                        rows=LossSpec("uft_train.losses.dpo_nll_row", frozenset({"sft"}), False,
                                      ("policy_logps", "n_tokens"), _hyper(nll_alpha=1.0))),
})

if tuple(LOSSES) != get_args(LossName):
    raise ImportError("uft_train.loss_table: LossName must list the table's entries in order")  # a bug here


def get_loss(name: str) -> LossSpec:
    """The table entry for a recipe's `loss.name`; an unknown name is a `ValueError` listing the known ones."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss.name: unknown loss (got {name!r}); expected one of {', '.join(LOSSES)}. "
                         "Set loss.name in the recipe to one of them.")
    return LOSSES[name]


def resolve(name: str, values: Mapping[str, object]) -> dict[str, object]:
    """The `loss.*` values that apply to loss `name`, from the recipe's `values` (key -> value or None):
    a null hyperparameter the loss uses becomes the loss's table default, one it does not use becomes
    null (so a resolved recipe states exactly what ran), and `pairwise` its default (null where the loss
    has no choice). The one place where null means "the loss's default"."""
    spec = get_loss(name)
    out: dict[str, object] = {key: None for key in hyperparameter_keys()}
    for key, default in spec.hyperparameters.items():
        given = values.get(key)
        out[key] = default if given is None else given
    given = values.get("pairwise")
    out["pairwise"] = (given if given is not None else spec.pairwise[0]) if spec.pairwise else None
    return out


def pair_loss(name: str, pairwise: str | None) -> LossSpec | None:
    """The loss whose one term each pair of the micro-batch gives, or None when the rows of a pair
    are two row terms: the loss itself where its terms are pairs, else the pair loss `loss.pairwise`
    names (null: the loss's default) where the loss allows that choice (`rows` keeps them as rows)."""
    spec = get_loss(name)
    if spec.term == "pair":
        return spec
    choice = resolve(name, {"pairwise": pairwise})["pairwise"]
    return get_loss(choice) if isinstance(choice, str) and choice != ROWS else None


def row_loss(name: str) -> LossSpec | None:
    """The term each row outside a pair term gives (None: the loss trains pairs only): the loss's own
    where its terms are rows, else its `rows` entry (orpo's and dpo_nll's NLL term of sft rows)."""
    spec = get_loss(name)
    return spec if spec.term == "row" else spec.rows


def pairs_as_one_term(name: str, pairwise: str | None) -> bool:
    """Whether a pair counts as one term (for batch sizes and the denominator) or as two rows."""
    return pair_loss(name, pairwise) is not None


def hyperparameter_keys() -> tuple[str, ...]:
    """Every loss's hyperparameters, each once, in table order (the recipe's `loss.*` numbers)."""
    return tuple(dict.fromkeys(key for spec in LOSSES.values() for key in spec.hyperparameters))


def defaults_help() -> str:
    """Each loss's defaults for the null `loss.*` keys, one line per loss (`uft-train --help`)."""
    lines = []
    for name, spec in LOSSES.items():
        stated = [f"{key} {value:g}" for key, value in spec.hyperparameters.items()]
        stated += [f"pairwise {spec.pairwise[0]}"] if spec.pairwise else []
        lines.append(f"  {name}: {', '.join(stated) or 'none'}")
    return "\n".join(lines)


def losses_where(test: Callable[[LossSpec], bool]) -> list[str]:
    """The names of the entries for which `test` holds, in table order (for error messages)."""
    return [name for name, spec in LOSSES.items() if test(spec)]


@functools.cache
def _resolve(dotted: str) -> Callable[..., Any]:
    module, _, attribute = dotted.rpartition(".")
    function: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return function
