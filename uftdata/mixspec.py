"""The mixture spec: what `uftdata mix` builds, from `--take` options or a recipe's `mixture:` section.

The `mixture:` section has one reader, `mixture_from_mapping`, which `uft-train RECIPE.yaml` (through
the strict loader, `uftdata.strict`) and `uftdata mix RECIPE.yaml` both call: the same problems, as
`Problem`s at dotted keys, reported all at once. Options (`--take`, `--test`, `--sweep`) stop at
their first problem. Paths in a recipe are relative to the directory `uftdata mix` runs in (the
repository root in our examples), like the paths on the command line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar

from uftdata.errors import UftDataError
from uftdata.problems import Problem, RecipeError
from uftdata.strict import apply_overrides, read_field, read_mapping, unknown_key

OnShort = Literal["error", "repeat"]
_COUNT = re.compile(r"^(\d+(?:\.\d+)?)\s*([km]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}  # `k` is 1,000 exactly (docs/design.md)
FRACTION_SLACK = 1e-9  # 0.1 + 0.2 + 0.7 is 1.0000000000000002 in floats


@dataclass(frozen=True)
class Take:
    """How much of a source: `count` rows, `all` rows, or `fraction` of the final mixture."""

    text: str
    count: int | None = None
    fraction: float | None = None

    @property
    def is_all(self) -> bool:
        return self.count is None and self.fraction is None


@dataclass(frozen=True)
class HeldOut:
    """Held-out rows of one source: groups whose keyed hash is below `fraction`, or a file."""

    fraction: float | None = None
    file: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    path: str
    take: Take
    test: HeldOut | None = None


@dataclass(frozen=True)
class MixtureSpec:
    sources: tuple[SourceSpec, ...]
    out: str | None = None
    seed: int = 0
    on_short: OnShort = "error"
    total: int | None = None
    sweep: tuple[Take, ...] = field(default_factory=tuple)  # takes for the first source, one mixture each

    def with_take(self, take: Take) -> MixtureSpec:
        first = replace(self.sources[0], take=take)
        return replace(self, sources=(first, *self.sources[1:]), sweep=())

    @property
    def name(self) -> str:
        """`mix_<take>_<take>...`, e.g. mix_20k_all: the folder name a sweep gives each mixture."""
        return "mix_" + "_".join(re.sub(r"[^0-9A-Za-z.]+", "", s.take.text) for s in self.sources)


_EXTENSIONS = (".gz", ".jsonl", ".ndjson", ".json", ".parquet")
_SPLIT_SUFFIX = re.compile(r"[_.-](?:train|test|validation|valid|val|dev|eval)$", re.IGNORECASE)


def source_name(name: str) -> str:
    """A source's default name from its file or folder name: without the input extensions and a
    trailing split name, so a dataset's train and test files name one source (the rows' `source`
    of unfold/score/feedback, and a mixture source whose rows disagree on theirs):
    `hh-rlhf_harmless-base_test.jsonl` -> `hh-rlhf_harmless-base`, `helpsteer2_validation.jsonl.gz`
    -> `helpsteer2`, `ultrachat.v2.parquet` -> `ultrachat.v2`."""
    stem = name
    while ext := next((e for e in _EXTENSIONS if stem.lower().endswith(e) and len(stem) > len(e)), None):
        stem = stem[: -len(ext)]
    return _SPLIT_SUFFIX.sub("", stem) or stem


def parse_take(value: object, where: str) -> Take:
    """`20k`, `260k`, `1.5m`, `20000` (rows); `all`; `0.5` or `50%` (fraction of the mixture)."""
    return _or_raise(read_take(value, where))


def read_take(value: object, key: str) -> Take | Problem:
    """`parse_take` for a recipe: a problem is returned, to be reported with the others."""
    text = str(value).strip()
    if text.lower() == "all":
        return Take("all")
    if isinstance(value, bool):
        return Problem(key, "is not a count, fraction or `all`", value)
    if text.endswith("%") and _is_number(text[:-1]):
        return _fraction(float(text[:-1]) / 100, text, key)
    if isinstance(value, float) or ("." in text and not text[-1:].isalpha() and _is_number(text)):
        return _fraction(float(text), text, key)
    match = _COUNT.match(text)
    if match is None:
        return Problem(key, "is not a count, fraction or `all`", value, "e.g. 20k, 260k, 20000, all, 0.5 or 50%")
    count = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if count != math.floor(count) or count <= 0:
        return Problem(key, "is not a positive whole number of rows", value)
    return Take(text, count=int(count))


def _fraction(value: float, text: str, key: str) -> Take | Problem:
    if not 0 < value <= 1:
        return Problem(key, "fraction must be in (0, 1]", text)
    return Take(text, fraction=value)


def parse_test(value: object, where: str) -> HeldOut:
    """`0.01` / `{fraction: 0.01}` or a path / `{file: PATH}`."""
    return _or_raise(read_test(value, where))


def read_test(value: object, key: str) -> HeldOut | Problem:
    """`parse_test` for a recipe: a problem is returned, to be reported with the others."""
    if isinstance(value, dict):
        if set(value) - {"fraction", "file"} or len(value) != 1:
            return Problem(key, "needs exactly one of `fraction` or `file`", value)
        value = value.get("fraction", value.get("file"))
        if isinstance(value, str) and not _is_number(value):
            return HeldOut(file=value)
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        fraction = float(value)
        if not 0 < fraction < 1:
            return Problem(key, "test fraction must be in (0, 1)", value)
        return HeldOut(fraction=fraction)
    if isinstance(value, str) and value:
        return HeldOut(file=value)
    return Problem(key, "is not a fraction or a file", value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_T = TypeVar("_T")


def _or_raise(value: _T | Problem) -> _T:
    """Command-line options stop at their first problem."""
    if isinstance(value, Problem):
        raise value.error()
    return value


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    path, sep, value = text.rpartition("=")
    if not sep or not path or not value:
        raise UftDataError(option, "is not PATH=VALUE", got=text, expected="e.g. data/ultrachat.parquet=20k")
    return path, value


def spec_from_options(
    takes: list[str], tests: list[str], *, seed: int, on_short: OnShort, total: str | None, sweep: str | None
) -> MixtureSpec:
    """The spec given by `--take PATH=N`, `--test PATH=F|FILE`, `--sweep PATH=N,N,...`."""
    test_by_path = {p: parse_test(v, f"--test {p}") for p, v in (parse_assignment(t, "--test") for t in tests)}
    sources = []
    for text in takes:
        path, value = parse_assignment(text, "--take")
        sources.append(SourceSpec(path, parse_take(value, f"--take {path}"), test_by_path.pop(path, None)))
    if test_by_path:
        raise UftDataError("--test", "names a path without a --take", got=sorted(test_by_path))
    sweep_takes: tuple[Take, ...] = ()
    if sweep is not None:
        path, values = parse_assignment(sweep, "--sweep")
        sweep_takes = tuple(parse_take(v, f"--sweep {path}") for v in values.split(","))
        rest = [s for s in sources if s.path != path]
        first = next((s for s in sources if s.path == path), SourceSpec(path, sweep_takes[0]))
        sources = [first, *rest]
    problems: list[Problem] = []
    spec = MixtureSpec(tuple(sources), seed=seed, on_short=on_short, total=_read_total(total, "total", problems),
                       sweep=sweep_takes)
    problems = problems or spec_problems(spec, "options", takes_key="--take", total_key="--total")
    if problems:
        raise problems[0].error()
    return spec


def _read_total(value: object, key: str, problems: list[Problem]) -> int | None:
    if value is None:
        return None
    take = read_take(value, key)
    if isinstance(take, Problem) or take.count is None:
        problems.append(take if isinstance(take, Problem) else Problem(key, "must be a row count", value))
        return None
    return take.count


# --- the `mixture:` section of a recipe ------------------------------------------------------------

_SECTION_KEYS = ("out", "seed", "sources", "on_short", "total")
_SOURCE_KEYS = ("path", "take", "test")


def load_recipe_mixture(path: Path, overrides: Sequence[str] = ()) -> MixtureSpec:
    """What `uftdata mix RECIPE [mixture.KEY=VALUE ...]` builds: the recipe's `mixture:` section
    with the overrides applied, read by `mixture_from_mapping` as `uft-train` reads it. Only
    `mixture.*` keys may be overridden: the other sections' schema is the trainer's, so a typo there
    could not be caught here. A `RecipeError` lists every problem."""
    data = read_mapping(path, "a mapping with a mixture: section (see recipes/)")
    problems = apply_overrides(data, overrides, section="mixture")
    spec, more = mixture_from_mapping(data.get("mixture"), "mixture")
    problems += more
    if data.get("mixture") is None and not problems:
        problems.append(Problem("", "has no `mixture:` section", fix="See recipes/ for examples."))
    if spec is None or problems:
        raise RecipeError([p.line(str(path)) for p in problems])
    return spec


def mixture_from_mapping(value: object, key: str = "mixture") -> tuple[MixtureSpec | None, list[Problem]]:
    """The `mixture:` section at `key` (null: none) and every problem in it: the one reader of
    `uft-train RECIPE` and `uftdata mix RECIPE`. The checks of the whole spec wait for its fields."""
    if value is None:
        return None, []
    if not isinstance(value, dict):
        return None, [Problem(key, "must be a mapping", value, "the `uftdata mix` section; see recipes/")]
    problems = [unknown_key(f"{key}.{k}", _SECTION_KEYS) for k in value if k not in _SECTION_KEYS]
    sources = _read_sources(value.get("sources"), f"{key}.sources", problems)
    out = read_field(value, "out", str | None, None, f"{key}.out", problems)
    seed = read_field(value, "seed", int, 0, f"{key}.seed", problems)
    on_short = read_field(value, "on_short", OnShort, "error", f"{key}.on_short", problems)
    total = _read_total(value.get("total"), f"{key}.total", problems)
    if problems:
        return None, problems
    spec = MixtureSpec(tuple(sources), out=out, seed=seed, on_short=on_short, total=total)
    problems = spec_problems(spec, key, takes_key=f"{key}.sources", total_key=f"{key}.total")
    return (None if problems else spec), problems


def _read_sources(value: object, key: str, problems: list[Problem]) -> list[SourceSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(key, "must be a list", value, "a list of {path, take, test}"))
        return []
    sources = []
    for i, item in enumerate(value):
        at = f"{key}[{i}]"
        if not isinstance(item, dict) or "path" not in item:
            problems.append(Problem(at, "needs `path` and `take`"))
            continue
        problems += [unknown_key(f"{at}.{k}", _SOURCE_KEYS) for k in item if k not in _SOURCE_KEYS]
        take = read_take(item.get("take", "all"), f"{at}.take")
        test = read_test(item["test"], f"{at}.test") if item.get("test") is not None else None
        if isinstance(take, Problem) or isinstance(test, Problem):
            problems += [p for p in (take, test) if isinstance(p, Problem)]
        else:
            sources.append(SourceSpec(str(item["path"]), take, test))
    return sources


def spec_to_mapping(spec: MixtureSpec) -> dict:
    """The `mixture:` section that `mixture_from_mapping` reads back to `spec` (a run's recipe.yaml)."""
    sources = []
    for s in spec.sources:
        item: dict[str, object] = {"path": s.path, "take": s.take.text}
        if s.test is not None:
            item["test"] = {"fraction": s.test.fraction} if s.test.fraction is not None else {"file": s.test.file}
        sources.append(item)
    out = {"out": spec.out, "seed": spec.seed, "sources": sources, "on_short": spec.on_short}
    return out | ({"total": spec.total} if spec.total is not None else {})


# --- checks of the whole spec ------------------------------------------------------------------------

def spec_problems(spec: MixtureSpec, where: str, *, takes_key: str, total_key: str) -> list[Problem]:
    """What no single field shows: no source, a source twice, a total without fractions, fractions
    that do not fit (of every mixture of a sweep)."""
    if not spec.sources:
        return [Problem(where, "names no sources", fix="Add --take PATH=COUNT (or mixture.sources).")]
    problems = []
    paths = [s.path for s in spec.sources]
    if len(set(paths)) != len(paths):
        problems.append(Problem(where, "names a source twice", paths))
    variants = [spec.with_take(t) for t in spec.sweep] or [spec]
    if spec.total is not None and not any(s.take.fraction is not None for v in variants for s in v.sources):
        problems.append(Problem(total_key, "applies to fractional takes, and no source takes a fraction", spec.total,
                                fix="Drop the total, or give a source a fraction of the mixture (e.g. 0.5 or 50%)."))
    return problems + [p for v in variants if (p := _fraction_problem(v, takes_key, total_key)) is not None]


def _fraction_problem(spec: MixtureSpec, takes_key: str, total_key: str) -> Problem | None:
    """Fractions are shares of the final mixture, so together they are at most all of it (and
    under 1 next to absolute counts, which need room).
    Whether the absolute counts fit in the total is known after reading (`all`): mix.resolve_counts."""
    fractions = [s for s in spec.sources if s.take.fraction is not None]
    if not fractions:
        return None
    given = [f"{s.path}={s.take.text}" for s in fractions]
    share = sum(s.take.fraction or 0 for s in fractions)
    if share > 1 + FRACTION_SLACK:
        return Problem(takes_key, f"fractions sum to {share:g}, more than the whole mixture", given,
                       fix="Lower them so they sum to at most 1.")
    if spec.total is None and len(fractions) == len(spec.sources):
        return Problem(takes_key, "fractions need a total or one absolute count", given,
                       fix=f"Add {total_key} N or give one source a count.")
    if spec.total is None and share >= 1 - FRACTION_SLACK:
        return Problem(takes_key, f"fractions sum to {share:g}, leaving no room for the absolute counts", given,
                       fix=f"Lower them below 1, or give {total_key} N.")
    return None
