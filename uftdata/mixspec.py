"""The mixture spec: what `uftdata mix` builds, from `--take` options or a recipe's `mixture:` section.

One loader for both, so `uftdata mix RECIPE.yaml` and `uft-train RECIPE.yaml` read the same file.
Paths in a recipe are relative to the directory `uftdata mix` runs in (the repository root in our
examples), like the paths on the command line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

import yaml

from uftdata.errors import UftDataError

OnShort = Literal["error", "repeat"]
_COUNT = re.compile(r"^(\d+(?:\.\d+)?)\s*([km]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1_000, "m": 1_000_000}  # `k` is 1,000 exactly (DESIGN.md)
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
    text = str(value).strip()
    if text.lower() == "all":
        return Take("all")
    if isinstance(value, bool):
        raise UftDataError(where, "is not a count, fraction or `all`", got=value)
    if text.endswith("%"):
        return _fraction(float(text[:-1]) / 100, text, where)
    if isinstance(value, float) or ("." in text and not text[-1:].isalpha()):
        return _fraction(float(text), text, where)
    match = _COUNT.match(text)
    if match is None:
        raise UftDataError(where, "is not a count, fraction or `all`", got=value,
                           expected="e.g. 20k, 260k, 20000, all, 0.5 or 50%")
    count = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if count != math.floor(count) or count <= 0:
        raise UftDataError(where, "is not a positive whole number of rows", got=value)
    return Take(text, count=int(count))


def _fraction(value: float, text: str, where: str) -> Take:
    if not 0 < value <= 1:
        raise UftDataError(where, "fraction must be in (0, 1]", got=text)
    return Take(text, fraction=value)


def parse_test(value: object, where: str) -> HeldOut:
    """`0.01` / `{fraction: 0.01}` or a path / `{file: PATH}`."""
    if isinstance(value, dict):
        unknown = set(value) - {"fraction", "file"}
        if unknown or len(value) != 1:
            raise UftDataError(where, "needs exactly one of `fraction` or `file`", got=value)
        value = value.get("fraction", value.get("file"))
        if isinstance(value, str) and not _is_number(value):
            return HeldOut(file=value)
    if isinstance(value, (int, float)) or (isinstance(value, str) and _is_number(value)):
        fraction = float(value)  # type: ignore[arg-type]
        if not 0 < fraction < 1:
            raise UftDataError(where, "test fraction must be in (0, 1)", got=value)
        return HeldOut(fraction=fraction)
    if isinstance(value, str) and value:
        return HeldOut(file=value)
    raise UftDataError(where, "is not a fraction or a file", got=value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    path, sep, value = text.rpartition("=")
    if not sep or not path or not value:
        raise UftDataError(option, "is not PATH=VALUE", got=text, expected="e.g. data/ultrachat.parquet=20k")
    return path, value


def spec_from_options(
    takes: list[str], tests: list[str], *, seed: int, on_short: str, total: str | None, sweep: str | None
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
    return _checked(MixtureSpec(tuple(sources), seed=seed, on_short=on_short, total=_total(total), sweep=sweep_takes),
                    "options", takes_key="--take", total_key="--total")  # type: ignore[arg-type]


def _total(value: object) -> int | None:
    if value is None:
        return None
    take = parse_take(value, "total")
    if take.count is None:
        raise UftDataError("total", "must be a row count", got=value)
    return take.count


def load_recipe_mixture(path: Path) -> MixtureSpec:
    """The `mixture:` section of a recipe; unknown keys are reported all at once."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UftDataError(str(path), f"cannot read the recipe ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("mixture"), dict):
        raise UftDataError(str(path), "has no `mixture:` section", fix="See recipes/ for examples.")
    return spec_from_mapping(data["mixture"], f"{path.name}: mixture")


def spec_from_mapping(section: dict, where: str) -> MixtureSpec:
    allowed = {"out", "seed", "sources", "on_short", "total"}
    problems = [f"{where}.{k}: unknown key (allowed: {', '.join(sorted(allowed))})" for k in section if k not in allowed]
    sources = []
    for i, item in enumerate(section.get("sources") or []):
        at = f"{where}.sources[{i}]"
        if not isinstance(item, dict) or "path" not in item:
            problems.append(f"{at}: needs `path` and `take`")
            continue
        problems += [f"{at}.{k}: unknown key (allowed: path, take, test)" for k in item if k not in {"path", "take", "test"}]
        try:
            test = parse_test(item["test"], f"{at}.test") if item.get("test") is not None else None
            sources.append(SourceSpec(str(item["path"]), parse_take(item.get("take", "all"), f"{at}.take"), test))
        except UftDataError as e:
            problems.append(e.line())
    if problems:
        raise UftDataError(where, "invalid mixture section:\n  " + "\n  ".join(problems))
    seed = section.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UftDataError(f"{where}.seed", "is not an integer", got=seed)
    spec = MixtureSpec(tuple(sources), out=section.get("out"), seed=seed,
                       on_short=section.get("on_short", "error"), total=_total(section.get("total")))
    return _checked(spec, where, takes_key=f"{where}.sources", total_key=f"{where}.total")


def _checked(spec: MixtureSpec, where: str, *, takes_key: str, total_key: str) -> MixtureSpec:
    if not spec.sources:
        raise UftDataError(where, "names no sources", fix="Add --take PATH=COUNT (or mixture.sources).")
    if spec.on_short not in get_args(OnShort):
        raise UftDataError(f"{where}.on_short", "is not allowed", got=spec.on_short, expected=", ".join(get_args(OnShort)))
    paths = [s.path for s in spec.sources]
    if len(set(paths)) != len(paths):
        raise UftDataError(where, "names a source twice", got=paths)
    variants = [spec.with_take(t) for t in spec.sweep] or [spec]
    if spec.total is not None and not any(s.take.fraction is not None for v in variants for s in v.sources):
        raise UftDataError(total_key, "applies to fractional takes, and no source takes a fraction", got=spec.total,
                           fix="Drop the total, or give a source a fraction of the mixture (e.g. 0.5 or 50%).")
    for variant in variants:
        _check_fractions(variant, takes_key, total_key)
    return spec


def _check_fractions(spec: MixtureSpec, takes_key: str, total_key: str) -> None:
    """Fractions are shares of the final mixture, so together they are at most all of it (and
    under 1 next to absolute counts, which need room).
    Whether the absolute counts fit in the total is known after reading (`all`): mix.resolve_counts."""
    fractions = [s for s in spec.sources if s.take.fraction is not None]
    if not fractions:
        return
    given = [f"{s.path}={s.take.text}" for s in fractions]
    share = sum(s.take.fraction or 0 for s in fractions)
    if share > 1 + FRACTION_SLACK:
        raise UftDataError(takes_key, f"fractions sum to {share:g}, more than the whole mixture", got=given,
                           fix="Lower them so they sum to at most 1.")
    if spec.total is None and len(fractions) == len(spec.sources):
        raise UftDataError(takes_key, "fractions need a total or one absolute count", got=given,
                           fix=f"Add {total_key} N or give one source a count.")
    if spec.total is None and share >= 1 - FRACTION_SLACK:
        raise UftDataError(takes_key, f"fractions sum to {share:g}, leaving no room for the absolute counts", got=given,
                           fix=f"Lower them below 1, or give {total_key} N.")
