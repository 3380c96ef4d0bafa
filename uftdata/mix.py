"""`uftdata mix`: sources in the row schema -> a mixture folder (DESIGN.md, "Mixture folder and mixing").

Order: validate -> dedup -> test split -> rank -> take. Only the small columns (ids, kind, score,
label, group) are held in memory while planning; the rows themselves are read again, row group by
row group, when the shards are written (mixout.py).
- Dedup unit: the pair for pairwise rows, the row otherwise; the first source in the spec wins.
- Test split per source, by `group`, before any sampling, so it does not move with the ratio. Rows
  of any source whose group is held out somewhere are kept out of training (`held_out_group`).
- Rank: xxh3-64 of (seed, pair_id or id); taking in rank order makes mixtures nested (16k inside
  32k) and independent of input order and file splitting.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from uftdata import schema
from uftdata.errors import RecordError, UftDataError
from uftdata.hub import is_hub_url, parse_url
from uftdata.ids import keyed_uint64
from uftdata.mixspec import MixtureSpec, SourceSpec
from uftdata.reader import PARQUET_BATCH_ROWS, InputFile, expand_inputs
from uftdata.rejects import Rejects

INDEX_COLUMNS = ("id", "pair_id", "kind", "score", "label", "group", "source")
_TWO_64 = 1 << 64


@dataclass
class SourceState:
    """One source after planning: its training candidates in rank order, its test rows, its counts."""

    spec: SourceSpec
    name: str
    parts: list[int]
    candidates: pl.DataFrame = field(default_factory=pl.DataFrame)  # unit rows, rank order
    test: pl.DataFrame = field(default_factory=pl.DataFrame)
    test_from_file: bool = False
    records_in: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def unit_rows(self) -> int:
        """2 when every candidate is a pair (counts are then rounded in pairs), else 1."""
        kinds = self.candidates["kind"].unique().to_list() if self.candidates.height else []
        return 2 if kinds == ["pairwise"] else 1


@dataclass
class Plan:
    spec: MixtureSpec
    parts: list[InputFile]
    sources: list[SourceState]


# What validation reads: every column but the message contents, which no row rule looks at and
# which are nearly all of a file's bytes (nested Parquet paths select only the roles).
VALIDATION_COLUMNS = ["id", "prompt.list.element.role", "completion.list.element.role", "score", "kind", "label",
                      "pair_id", "source", "source_id", "group", "turn"]


def read_index(f: InputFile, part: int, rejects: Rejects) -> pl.DataFrame:
    """The small columns of a schema file, validated; `part`/`row` locate each row for writing."""
    if f.container != "parquet" or f.gzipped:
        raise UftDataError(f.name, "mix reads uncompressed Parquet files in the uft row schema",
                           got=f.name, fix="Convert it first with `uftdata unfold`, `score` or `feedback`.")
    file = f.parquet()
    problems = schema.schema_problems(file.schema_arrow)
    if problems:
        raise UftDataError(f.name, "is not in the uft row schema: " + "; ".join(problems))
    blocks, start = [], 0
    for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=VALIDATION_COLUMNS):
        frame = pl.from_arrow(batch)
        bad = schema.row_problems(frame)  # its `row` is the position in this batch
        for row, column, problem in bad.iter_rows():
            rejects.reject(RecordError(f.where(start + row), column, problem), {"id": frame["id"][row]})
        frame = frame.with_columns(row=pl.int_range(start, start + batch.num_rows, dtype=pl.Int64))
        blocks.append(frame.filter(~pl.col("row").is_in((bad["row"] + start).implode())).select(*INDEX_COLUMNS, "row"))
        start += batch.num_rows
    index = pl.concat(blocks) if blocks else pl.DataFrame()
    return index.with_columns(part=pl.lit(part, dtype=pl.Int32))


def _unit(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(unit=pl.when(pl.col("kind") == "pairwise").then(pl.col("pair_id")).otherwise(pl.col("id")))


def dedup(rows: pl.DataFrame, seen: pl.DataFrame, counts: Counter[str]) -> pl.DataFrame:
    """Rows whose (unit, id) was not seen before; a duplicate with another score is counted apart."""
    rows = rows.with_row_index("_pos")
    first = rows.unique(["unit", "id"], keep="first", maintain_order=True)
    repeats = rows.join(first.select("_pos"), on="_pos", how="anti")
    new = first.join(seen, on=["unit", "id"], how="anti")
    dup = pl.concat([repeats.join(first.select("unit", "id", kept="score"), on=["unit", "id"]),
                     first.join(seen.rename({"score": "kept"}), on=["unit", "id"])])
    conflicting = int((dup["score"] != dup["kept"]).sum()) if dup.height else 0
    counts["duplicate_conflicting_score"] += conflicting
    counts["duplicate"] += dup.height - conflicting
    return new.drop("_pos")


def drop_broken_pairs(f_name: str, rows: pl.DataFrame, rejects: Rejects, counts: Counter[str]) -> pl.DataFrame:
    broken = schema.pair_problems(rows.filter(pl.col("kind") == "pairwise"))
    for pair_id, problem in broken.iter_rows():
        rejects.reject(RecordError(f"{f_name}: pair_id {pair_id}", "pair_id", problem), {"pair_id": pair_id})
    bad = rows.filter(pl.col("pair_id").is_in(broken["pair_id"].implode()))
    counts["broken_pair"] += bad.height
    return rows.join(bad.select("part", "row"), on=["part", "row"], how="anti")


def plan(spec: MixtureSpec, rejects: Rejects) -> Plan:
    """Validate, dedup, split and rank every source (the work a sweep shares between mixtures)."""
    parts: list[InputFile] = []
    states: list[SourceState] = []
    seen = pl.DataFrame(schema={"unit": pl.String, "id": pl.String, "score": pl.Float32})
    test_groups: set[str] = set()
    for source in spec.sources:
        files = expand_inputs([source.path])
        state = SourceState(source, _source_name(source.path), list(range(len(parts), len(parts) + len(files))))
        parts += files
        rows = _read_all(files, state.parts, rejects, state)
        rows = drop_broken_pairs(files[0].name, dedup(_unit(rows), seen, state.dropped), rejects, state.dropped)
        seen = pl.concat([seen, rows.select("unit", "id", "score")])
        if source.test and source.test.fraction is not None:
            is_test = in_test_fraction(rows["group"], source.test.fraction, spec.seed)
            state.test, rows = rows.filter(is_test), rows.filter(~is_test)
        elif source.test and source.test.file is not None:
            test_files = expand_inputs([source.test.file])
            test_parts = list(range(len(parts), len(parts) + len(test_files)))
            parts += test_files
            state.test = _unit(_read_all(test_files, test_parts, rejects, None))
            state.test_from_file = True
        test_groups.update(state.test["group"].to_list() if state.test.height else [])
        state.candidates = rows
        states.append(state)
    held_out = pl.Series("group", sorted(test_groups), dtype=pl.String)
    for state in states:
        rows = state.candidates
        out = rows.filter(pl.col("group").is_in(held_out.implode()))
        state.dropped["held_out_group"] += out.height
        state.candidates = _ranked(rows.join(out.select("part", "row"), on=["part", "row"], how="anti"), spec.seed)
        state.test = _ranked(state.test, spec.seed) if state.test.height else state.test
    return Plan(spec, parts, states)


def in_test_fraction(groups: pl.Series, fraction: float, seed: int) -> pl.Series:
    """True for groups whose keyed hash falls below `fraction` of the 64-bit range."""
    keys = groups.to_frame("g").select(pl.format("test:{}", "g")).to_series()
    hashed = keyed_uint64(keys, seed).to_frame("h")
    return hashed.select(pl.col("h") < pl.lit(int(fraction * _TWO_64), dtype=pl.UInt64)).to_series()


def _read_all(files: list[InputFile], parts: list[int], rejects: Rejects, state: SourceState | None) -> pl.DataFrame:
    before = rejects.count
    frames = [read_index(f, part, rejects) for f, part in zip(files, parts)]
    frames = [f for f in frames if f.height]
    rows = pl.concat(frames) if frames else pl.DataFrame(schema={**{c: schema.POLARS_SCHEMA[c] for c in INDEX_COLUMNS},
                                                                "row": pl.Int64, "part": pl.Int32})
    if state is not None:
        state.records_in += rows.height + rejects.count - before
        state.dropped["invalid_row"] += rejects.count - before
    return rows


def _ranked(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Rows sorted by their unit's rank; a pair's chosen row first."""
    rank = keyed_uint64(rows["unit"], seed).alias("rank")
    return rows.with_columns(rank).sort(["rank", "unit", "label"], descending=[False, False, True], nulls_last=True)


def _source_name(path: str) -> str:
    if is_hub_url(path):  # hf://datasets/ORG/NAME@REV[/PATH]: the file's name, else the dataset's
        url = parse_url(path)
        path = url.path or url.repo_id
    return path.rstrip("/").rsplit("/", 1)[-1].split(".")[0]


# ---------------------------------------------------------------------------------------------
# Counts and taking


def resolve_counts(spec: MixtureSpec, states: list[SourceState]) -> list[int]:
    """Rows to take from each source: counts as given, `all`, and fractions of the final mixture
    (of `total`, or of the total implied by the absolute counts), largest-remainder rounded in units."""
    takes = [s.take for s in spec.sources]
    fixed = [st.candidates.height if t.is_all else t.count for t, st in zip(takes, states)]
    fractional = [i for i, t in enumerate(takes) if t.fraction is not None]
    if not fractional:
        return [int(n) for n in fixed]  # type: ignore[arg-type]
    absolute = sum(n for i, n in enumerate(fixed) if i not in fractional)  # type: ignore[misc]
    share = sum(takes[i].fraction for i in fractional)  # type: ignore[misc]
    total = spec.total if spec.total is not None else absolute / (1 - share)
    rows = {i: takes[i].fraction * total for i in fractional}  # type: ignore[operator]
    units = {i: int(rows[i] // states[i].unit_rows) for i in fractional}
    # Largest remainder, in rows: units go to the largest remainders until the rounded total is
    # reached (a pair may overshoot it by one row).
    remaining = math.floor(sum(rows.values()) + 0.5) - sum(units[i] * states[i].unit_rows for i in fractional)
    for i in sorted(fractional, key=lambda i: (-(rows[i] - units[i] * states[i].unit_rows), i)):
        if remaining <= 0:
            break
        units[i] += 1
        remaining -= states[i].unit_rows
    return [units[i] * states[i].unit_rows if i in units else int(n) for i, n in enumerate(fixed)]  # type: ignore[arg-type]


def take(state: SourceState, count: int, on_short: str) -> tuple[pl.DataFrame, int]:
    """The first `count` rows in rank order (whole units), and how many rows were repeats."""
    rows = state.candidates
    if count == rows.height:
        return rows.with_columns(copy=pl.lit(0, dtype=pl.Int32)), 0
    if count > rows.height:
        if on_short != "repeat" or rows.height == 0:
            raise UftDataError(
                f"source {state.spec.path}", f"has {rows.height} rows for training, fewer than the {count} asked",
                fix="Lower the count, or pass --oversample (on_short: repeat) to repeat rows.")
        copies = -(-count // rows.height)
        repeated = pl.concat([rows.with_columns(copy=pl.lit(c, dtype=pl.Int32)) for c in range(copies)])
        selected = _whole_units(repeated, count, state)
        return selected, selected.height - rows.height
    return _whole_units(rows.with_columns(copy=pl.lit(0, dtype=pl.Int32)), count, state), 0


def _whole_units(rows: pl.DataFrame, count: int, state: SourceState) -> pl.DataFrame:
    selected = rows.head(count)
    last = selected.tail(1)
    if last.height and last["kind"][0] == "pairwise" and rows.height > count and rows["unit"][count] == last["unit"][0]:
        raise UftDataError(f"source {state.spec.path}", "count splits a pair", got=count,
                           fix="Pairs count 2 rows: use an even count.")
    return selected


def final_order(selected: pl.DataFrame, seed: int) -> pl.DataFrame:
    """All sources' rows in one rank order; repeated copies get their own rank."""
    copy_key = pl.when(pl.col("copy") == 0).then(pl.col("unit")).otherwise(pl.format("{}#{}", "unit", "copy"))
    keys = selected.select(copy_key.alias("k"))["k"]
    order = selected.with_columns(order=keyed_uint64(keys, seed))
    return order.sort(["order", "unit", "copy", "label"], descending=[False, False, False, True], nulls_last=True)
