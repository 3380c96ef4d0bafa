"""`manifest.json`: what a mixture folder holds (docs/design.md, "Mixture folder and mixing").

One frozen dataclass (`Manifest`), one reader (`read_manifest`) and one writer (`Manifest.to_json`):
nothing else opens the file or indexes it by string keys. The reader checks the file's shape and
types and names the field that is wrong (`files[2].sha256`); whether the folder's shards match it
is `uftdata.verify`'s job.

Format versions (the JSON key is `uft_mixture_version`; both load):
  1  `sources[].test.file` held the held-out file's path as the user typed it, so an absolute
     local path reached the Hub with the manifest.
  2  it holds the file's name (a Hub file keeps its hf:// URL); its sha256 is in `test_files`. No
     field holds a local directory. `uftdata mix` writes 2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeGuard, TypeVar

from uftdata.errors import UftDataError

MANIFEST = "manifest.json"
FORMAT_VERSION = 2
FORMAT_VERSIONS = (1, 2)
SPLIT_ORDER = ("train", "test")  # the order cards list splits in, whatever the file's key order
SHARD_PATH = re.compile(r"data/([a-z]+)-(\d{5,})-of-(\d{5,})\.parquet")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIX = "Rebuild the mixture with `uftdata mix`, or restore its manifest.json."
_T = TypeVar("_T")


@dataclass(frozen=True)
class Shard:
    """One Parquet file of the mixture, `data/{split}-{k:05d}-of-{n:05d}.parquet`."""

    path: str
    rows: int
    bytes: int
    sha256: str

    @property
    def split(self) -> str:
        return self.path.removeprefix("data/").split("-", 1)[0]


@dataclass(frozen=True)
class InputEntry:
    """A file a source was read from: a local file by name and sha256 (never its directory), a Hub
    file by URL and commit (hashing it would download it whole). `upstream` is the summary the
    command that wrote it stored in its footer (its own inputs, counts and drops)."""

    name: str
    rows: int
    sha256: str | None = None
    url: str | None = None
    revision: str | None = None
    license: str | None = None
    upstream: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        pinned = ({"url": self.url, "revision": self.revision, "license": self.license} if self.url is not None
                  else {"sha256": self.sha256})
        return {"name": self.name, **pinned, "rows": self.rows,
                **({"upstream": self.upstream} if self.upstream else {})}


@dataclass(frozen=True)
class HeldOutEntry:
    """A source's test split: a fraction of its groups, or a file (by name, or a Hub URL)."""

    fraction: float | None = None
    file: str | None = None

    def to_dict(self) -> dict:
        return {"fraction": self.fraction} if self.fraction is not None else {"file": self.file}


@dataclass(frozen=True)
class Accounting:
    """records_in = records_used + sum(dropped), for one source."""

    records_in: int
    records_used: int
    dropped: dict[str, int]


@dataclass(frozen=True)
class SourceEntry:
    name: str
    take: str
    rows_train: int
    rows_test: int
    repeated_rows: int
    test: HeldOutEntry | None
    accounting: Accounting
    files: tuple[InputEntry, ...]
    test_files: tuple[InputEntry, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "take": self.take, "rows_train": self.rows_train, "rows_test": self.rows_test,
                "repeated_rows": self.repeated_rows, "test": self.test.to_dict() if self.test else None,
                "accounting": {"records_in": self.accounting.records_in, "records_used": self.accounting.records_used,
                               "dropped": dict(self.accounting.dropped)},
                "files": [f.to_dict() for f in self.files], "test_files": [f.to_dict() for f in self.test_files]}


@dataclass(frozen=True)
class SplitCounts:
    rows: int
    by_source: dict[str, int]
    by_kind: dict[str, int]


@dataclass(frozen=True)
class Manifest:
    """A finished mixture: how it was made (seed, takes, sources and their accounting), what it
    holds (counts, content hash) and its shards with their sha256s. Dicts inside are not to be
    mutated: a manifest is what the file says."""

    format_version: int
    name: str
    seed: int
    on_short: str
    total: int | None
    sources: tuple[SourceEntry, ...]
    counts: dict[str, SplitCounts]  # SPLIT_ORDER first
    dropped: dict[str, int]
    content_hash: str
    files: tuple[Shard, ...]
    versions: dict[str, str]

    def shards(self, split: str) -> list[Shard]:
        """The split's shards in row order (their names sort in it)."""
        return sorted((f for f in self.files if f.split == split), key=lambda f: f.path)

    def to_dict(self) -> dict:
        return {
            "uft_mixture_version": self.format_version,
            "name": self.name,
            "seed": self.seed,
            "on_short": self.on_short,
            "total": self.total,
            "sources": [s.to_dict() for s in self.sources],
            "counts": {split: {"rows": c.rows, "by_source": dict(c.by_source), "by_kind": dict(c.by_kind)}
                       for split, c in self.counts.items()},
            "dropped": dict(self.dropped),
            "content_hash": self.content_hash,
            "files": [{"path": f.path, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256} for f in self.files],
            "versions": dict(self.versions),
        }

    def to_json(self) -> str:
        """The file's text: sorted keys, so the same mixture always gives the same bytes."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def ordered_splits(counts: dict[str, SplitCounts]) -> dict[str, SplitCounts]:
    """`counts` with train, then test, then any other split by name: the file stores keys sorted."""
    order = [s for s in SPLIT_ORDER if s in counts] + sorted(s for s in counts if s not in SPLIT_ORDER)
    return {s: counts[s] for s in order}


def manifest_path(location: Path | str) -> Path:
    """`location` itself when it names the file, else the manifest of the folder `location`."""
    location = Path(location)
    return location if location.name == MANIFEST and not location.is_dir() else location / MANIFEST


def read_manifest(location: Path | str) -> Manifest:
    """The manifest of a mixture folder (or the manifest file itself). UftDataError naming
    manifest.json and the field when the file is missing, not JSON, or has a field missing or of
    the wrong type."""
    path = manifest_path(location)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UftDataError(str(path), "not found: not a finished mixture folder",
                           fix="Build the mixture with `uftdata mix` (its manifest is written last).") from None
    except UnicodeDecodeError:
        raise UftDataError(str(path), "is not UTF-8 text", fix=FIX) from None
    except OSError as error:
        raise UftDataError(str(path), f"cannot be read ({error.strerror or error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise UftDataError(str(path), f"is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})",
                           fix=FIX) from None
    return parse_manifest(data, str(path))


def parse_manifest(data: object, where: str) -> Manifest:
    """A Manifest from the file's parsed JSON; `where` names the file in errors."""
    f = _Fields(where)
    top = f.mapping(data, "", required=("uft_mixture_version", "name", "seed", "on_short", "total", "sources",
                                        "counts", "dropped", "content_hash", "files", "versions"))
    version = f.integer(top, "uft_mixture_version", "uft_mixture_version")
    if version not in FORMAT_VERSIONS:
        f.fail("uft_mixture_version", f"is not a format this uft reads ({', '.join(map(str, FORMAT_VERSIONS))})",
               version, fix="Upgrade uft, or rebuild the mixture with this one.")
    counts = f.mapping(top["counts"], "counts")
    return Manifest(
        format_version=version,
        name=f.text(top, "name", "name"),
        seed=f.integer(top, "seed", "seed", minimum=None),
        on_short=f.choice(top, "on_short", "on_short", ("error", "repeat")),
        total=f.integer_or_none(top, "total", "total"),
        sources=tuple(_source(f, s, f"sources[{i}]") for i, s in enumerate(f.array(top["sources"], "sources"))),
        counts=ordered_splits({split: _split_counts(f, c, f"counts.{split}") for split, c in counts.items()}),
        dropped=f.tally(top["dropped"], "dropped"),
        content_hash=f.digest(top, "content_hash", "content_hash"),
        files=_shards(f, f.array(top["files"], "files")),
        versions={k: f.text(top["versions"], k, f"versions.{k}")
                  for k in f.mapping(top["versions"], "versions")},
    )


def _shards(f: _Fields, entries: list, field: str = "files") -> tuple[Shard, ...]:
    shards, seen = [], set()
    for i, raw in enumerate(entries):
        at = f"{field}[{i}]"
        entry = f.mapping(raw, at, required=("path", "rows", "bytes", "sha256"))
        path = f.text(entry, "path", f"{at}.path")
        # The reader opens these paths: nothing outside data/, no `..`.
        if not SHARD_PATH.fullmatch(path):
            f.fail(f"{at}.path", "is not a shard path", path, expected="data/SPLIT-NNNNN-of-NNNNN.parquet")
        if path in seen:
            f.fail(f"{at}.path", "lists a shard twice", path)
        seen.add(path)
        shards.append(Shard(path, f.integer(entry, "rows", f"{at}.rows"), f.integer(entry, "bytes", f"{at}.bytes"),
                            f.digest(entry, "sha256", f"{at}.sha256")))
    return tuple(shards)


def _source(f: _Fields, raw: object, at: str) -> SourceEntry:
    entry = f.mapping(raw, at, required=("name", "take", "rows_train", "rows_test", "repeated_rows", "test",
                                         "accounting", "files", "test_files"))
    accounting = f.mapping(entry["accounting"], f"{at}.accounting", required=("records_in", "records_used", "dropped"))
    return SourceEntry(
        name=f.text(entry, "name", f"{at}.name"),
        take=f.text(entry, "take", f"{at}.take"),
        rows_train=f.integer(entry, "rows_train", f"{at}.rows_train"),
        rows_test=f.integer(entry, "rows_test", f"{at}.rows_test"),
        repeated_rows=f.integer(entry, "repeated_rows", f"{at}.repeated_rows"),
        test=_held_out(f, entry["test"], f"{at}.test"),
        accounting=Accounting(f.integer(accounting, "records_in", f"{at}.accounting.records_in"),
                              f.integer(accounting, "records_used", f"{at}.accounting.records_used"),
                              f.tally(accounting["dropped"], f"{at}.accounting.dropped")),
        files=tuple(_input(f, x, f"{at}.files[{i}]") for i, x in enumerate(f.array(entry["files"], f"{at}.files"))),
        test_files=tuple(_input(f, x, f"{at}.test_files[{i}]")
                         for i, x in enumerate(f.array(entry["test_files"], f"{at}.test_files"))),
    )


def _held_out(f: _Fields, raw: object, at: str) -> HeldOutEntry | None:
    if raw is None:
        return None
    entry = f.mapping(raw, at, optional=("fraction", "file"))
    if len(entry) != 1:
        f.fail(at, "needs exactly one of `fraction` or `file`", raw)
    if "fraction" in entry:
        fraction = entry["fraction"]
        if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction < 1:
            f.fail(f"{at}.fraction", "is not a number in (0, 1)", fraction)
        return HeldOutEntry(fraction=fraction)
    return HeldOutEntry(file=f.text(entry, "file", f"{at}.file"))


def _input(f: _Fields, raw: object, at: str) -> InputEntry:
    keys = raw.keys() if isinstance(raw, dict) else ()
    hub = "url" in keys
    entry = f.mapping(raw, at, required=("name", "rows", *(("url", "revision", "license") if hub else ("sha256",))),
                      optional=("upstream",))
    upstream = entry.get("upstream")
    if upstream is not None and not isinstance(upstream, dict):
        f.fail(f"{at}.upstream", "is not an object", upstream)
    return InputEntry(
        name=f.text(entry, "name", f"{at}.name"),
        rows=f.integer(entry, "rows", f"{at}.rows"),
        sha256=None if hub else f.digest(entry, "sha256", f"{at}.sha256"),
        url=f.text(entry, "url", f"{at}.url") if hub else None,
        revision=f.text(entry, "revision", f"{at}.revision") if hub else None,
        license=f.text_or_none(entry, "license", f"{at}.license") if hub else None,
        upstream=upstream,
    )


def _split_counts(f: _Fields, raw: object, at: str) -> SplitCounts:
    entry = f.mapping(raw, at, required=("rows", "by_source", "by_kind"))
    return SplitCounts(f.integer(entry, "rows", f"{at}.rows"), f.tally(entry["by_source"], f"{at}.by_source"),
                       f.tally(entry["by_kind"], f"{at}.by_kind"))


class _Fields:
    """Typed access to the parsed JSON; every failure is one UftDataError naming the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, what: str, got: object = None, *, expected: str = "", fix: str = FIX) -> NoReturn:
        subject = f"field {field!r} {what}" if field else what
        raise UftDataError(self.where, subject, got=got, expected=expected, fix=fix)

    def mapping(self, value: object, field: str, *, required: tuple[str, ...] = (),
                optional: tuple[str, ...] | None = None) -> dict:
        """`value` as an object with every `required` key; with `optional` given (or `required`),
        any other key is refused."""
        if not isinstance(value, dict):
            self.fail(field, f"is not a JSON object (it is {_kind(value)})")
        for key in required:
            if key not in value:
                self.fail(_join(field, key), "is missing")
        if required or optional is not None:
            for key in value:
                if key not in required and key not in (optional or ()):
                    self.fail(_join(field, key), "is not a manifest field")
        return value

    def array(self, value: object, field: str) -> list:
        if not isinstance(value, list):
            self.fail(field, f"is not a list (it is {_kind(value)})")
        return value

    def _optional(self, obj: dict, key: str, field: str, check: Callable[[object], TypeGuard[_T]],
                  what: str) -> _T | None:
        if key not in obj:
            self.fail(field, "is missing")
        value = obj[key]
        if value is not None and not check(value):
            self.fail(field, f"is not {what}", value)
        return value

    def _required(self, obj: dict, key: str, field: str, check: Callable[[object], TypeGuard[_T]], what: str) -> _T:
        value = self._optional(obj, key, field, check, what)
        if value is None:
            self.fail(field, f"is not {what}", value)
        return value

    def integer(self, obj: dict, key: str, field: str, *, minimum: int | None = 0) -> int:
        return self._required(obj, key, field, *_integer(minimum))

    def integer_or_none(self, obj: dict, key: str, field: str) -> int | None:
        return self._optional(obj, key, field, *_integer(0))

    def text(self, obj: dict, key: str, field: str) -> str:
        return self._required(obj, key, field, _is_text, "a non-empty string")

    def text_or_none(self, obj: dict, key: str, field: str) -> str | None:
        return self._optional(obj, key, field, _is_text, "a non-empty string")

    def digest(self, obj: dict, key: str, field: str) -> str:
        return self._required(obj, key, field, _is_digest, "a sha256 (64 lowercase hex characters)")

    def choice(self, obj: dict, key: str, field: str, allowed: tuple[str, ...]) -> str:
        def is_allowed(v: object) -> TypeGuard[str]:
            return v in allowed

        return self._required(obj, key, field, is_allowed, f"one of {', '.join(allowed)}")

    def tally(self, value: object, field: str) -> dict[str, int]:
        """A `{name: count}` object (counts by kind, by source, by drop reason)."""
        counts = self.mapping(value, field)
        return {k: self.integer(counts, k, f"{field}.{k}") for k in counts}


def _integer(minimum: int | None) -> tuple[Callable[[object], TypeGuard[int]], str]:
    """The check for an integer (a JSON number without a fraction, not a boolean) and its wording."""
    def is_integer(v: object) -> TypeGuard[int]:
        return isinstance(v, int) and not isinstance(v, bool) and (minimum is None or v >= minimum)

    return is_integer, "an integer" if minimum is None else f"an integer >= {minimum}"


def _is_text(v: object) -> TypeGuard[str]:
    return isinstance(v, str) and v != ""


def _is_digest(v: object) -> TypeGuard[str]:
    return isinstance(v, str) and bool(SHA256.fullmatch(v))


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
