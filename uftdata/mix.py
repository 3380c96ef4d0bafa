"""`uftdata mix`: sources in the row schema -> a mixture folder (docs/design.md, "Mixture folder and mixing").

Order: validate -> dedup -> test split -> rank -> take. Only the small columns (ids, kind, score,
label, group, source) and a hash of the rest (`tie`) are held in memory while planning; the rows
themselves are read again, row group by row group, when the shards are written (mixout.py).
- Dedup unit: the pair for pairwise rows, the row otherwise; the first source in the spec wins.
  Within a source, of rows with one (unit, id) the lowest score survives, then the lowest hash of
  the row's other fields (`tie`): the survivor does not depend on the order of rows or files.
- Test split per source, by `group`, before any sampling, so it does not move with the ratio. Rows
  of any source whose group is held out somewhere are kept out of training (`held_out_group`).
- Rank: xxh3-64 of (seed, pair_id or id); taking in rank order makes mixtures nested (16k inside
  32k) and independent of input order and file splitting.
"""

from __future__ import annotations

import filecmp
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa

from uftdata import schema
from uftdata.errors import RecordError, UftDataError
from uftdata.hub import is_hub_url, parse_url
from uftdata.ids import keyed_uint64
from uftdata.inputs import InputFile, expand_inputs
from uftdata.mixspec import MixtureSpec, SourceSpec, source_name
from uftdata.reader import PARQUET_BATCH_ROWS
from uftdata.rejects import Rejects

INDEX_COLUMNS = ("id", "pair_id", "kind", "score", "label", "group", "source", "tie")
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
    row_sources: frozenset[str] = frozenset()  # the `source` values its valid rows carry

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
                      "pair_id", "source", "source_id", "group", "turn", "attributes"]


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
    batches = file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=VALIDATION_COLUMNS)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowInvalid, OSError) as e:  # a damaged page; the footer read fine
            raise UftDataError(f"{f.display}: row {start}", "cannot be read: the Parquet data is damaged "
                               f"({' '.join(str(e).split())})", fix="Write the file again.") from None
        if batch is None:
            break
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)  # a record batch converts to a frame, a column to a Series
        bad = schema.row_problems(frame)  # its `row` is the position in this batch
        # One reject per row (its first problem): a row with two problems is one row lost, not two.
        for row, column, problem in bad.unique("row", keep="first", maintain_order=True).iter_rows():
            rejects.reject(RecordError(f.where(start + row), column, problem), {"id": frame["id"][row]})
        frame = frame.with_columns(row=pl.int_range(start, start + batch.num_rows, dtype=pl.Int64), tie=_tie(frame))
        blocks.append(frame.filter(~pl.col("row").is_in((bad["row"] + start).implode())).select(*INDEX_COLUMNS, "row"))
        start += batch.num_rows
    index = pl.concat(blocks) if blocks else pl.DataFrame()
    return index.with_columns(part=pl.lit(part, dtype=pl.Int32))


def _tie(frame: pl.DataFrame) -> pl.Series:
    """A hash of every field two rows with one id can differ in (the id is their texts' hash): it
    orders duplicates of equal score, so which one survives does not depend on where they lie."""
    element = pl.element().struct
    attributes = pl.col("attributes").list.eval(pl.format("{}={}", element.field("name"), element.field("value")))
    fields = [pl.col("kind"), pl.col("label").cast(pl.String), pl.col("source"), pl.col("source_id"),
              pl.col("turn").cast(pl.String), attributes.list.join("\x1e")]
    text = frame.select(pl.concat_str([c.fill_null("\x00") for c in fields], separator="\x1f")).to_series()
    return keyed_uint64(text, 0).alias("tie")


def _unit(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(unit=pl.when(pl.col("kind") == "pairwise").then(pl.col("pair_id")).otherwise(pl.col("id")))


def dedup(rows: pl.DataFrame, seen: pl.DataFrame, counts: Counter[str]) -> pl.DataFrame:
    """Rows whose (unit, id) no earlier source had. Within this source, of rows with one (unit, id)
    the lowest score survives, then the lowest `tie`: the same row whatever the order of rows and
    files (README: "independent of input order"). A duplicate with another score is counted apart."""
    rows = rows.sort(["unit", "id", "score", "tie"])
    survivor = rows.select(pl.struct("unit", "id").is_first_distinct()).to_series()
    first, repeats = rows.filter(survivor), rows.filter(~survivor)
    new = first.join(seen, on=["unit", "id"], how="anti")
    dup = pl.concat([repeats.join(first.select("unit", "id", kept="score"), on=["unit", "id"]),
                     first.join(seen.rename({"score": "kept"}), on=["unit", "id"])])
    conflicting = int((dup["score"] != dup["kept"]).sum()) if dup.height else 0
    counts["duplicate_conflicting_score"] += conflicting
    counts["duplicate"] += dup.height - conflicting
    return new


def drop_broken_pairs(f_name: str, rows: pl.DataFrame, rejects: Rejects, counts: Counter[str]) -> pl.DataFrame:
    broken = schema.pair_problems(rows.filter(pl.col("kind") == "pairwise"))
    for pair_id, problem in broken.iter_rows():
        rejects.reject(RecordError(f"{f_name}: pair_id {pair_id}", "pair_id", problem), {"pair_id": pair_id})
    bad = rows.filter(pl.col("pair_id").is_in(broken["pair_id"].implode()))
    counts["broken_pair"] += bad.height
    return rows.join(bad.select("part", "row"), on=["part", "row"], how="anti")


def plan(spec: MixtureSpec, rejects: Rejects) -> Plan:
    """Validate, dedup, split and rank every source (the work a sweep shares between mixtures).

    Stops, rather than build a mixture that silently lacks data, at: a test file that is a training
    file, an input without (valid) rows, a source left without training rows, and a test split
    that was asked for and holds no row."""
    files_of = [expand_inputs([s.path]) for s in spec.sources]
    test_files_of = [expand_inputs([s.test.file]) if s.test and s.test.file is not None else [] for s in spec.sources]
    refuse_training_test_files(spec, files_of, test_files_of)
    parts: list[InputFile] = []
    states: list[SourceState] = []
    seen = pl.DataFrame(schema={"unit": pl.String, "id": pl.String, "score": pl.Float32})
    test_groups: set[str] = set()
    for source, files, test_files in zip(spec.sources, files_of, test_files_of):
        state = SourceState(source, "", list(range(len(parts), len(parts) + len(files))))
        parts += files
        rows = _read_all(files, state.parts, rejects, state)
        require_rows(source.path, state.records_in, rows.height)
        state.row_sources = frozenset(rows["source"].unique().to_list())
        rows = drop_broken_pairs(files[0].name, dedup(_unit(rows), seen, state.dropped), rejects, state.dropped)
        seen = pl.concat([seen, rows.select("unit", "id", "score")])
        if source.test and source.test.fraction is not None:
            is_test = in_test_fraction(rows["group"], source.test.fraction, spec.seed)
            state.test, rows = rows.filter(is_test), rows.filter(~is_test)
        elif source.test and test_files:  # test_files come from source.test.file
            test_parts = list(range(len(parts), len(parts) + len(test_files)))
            parts += test_files
            before = rejects.count
            state.test = _unit(_read_all(test_files, test_parts, rejects, None))
            require_rows(str(source.test.file), state.test.height + rejects.count - before, state.test.height)
            state.test_from_file = True
        test_groups.update(state.test["group"].to_list() if state.test.height else [])
        state.candidates = rows
        states.append(state)
    for state, name in zip(states, source_names(spec, [s.row_sources for s in states])):
        state.name = name
    held_out = pl.Series("group", sorted(test_groups), dtype=pl.String)
    for state in states:
        rows = state.candidates
        out = rows.filter(pl.col("group").is_in(held_out.implode()))
        state.dropped["held_out_group"] += out.height
        state.candidates = _ranked(rows.join(out.select("part", "row"), on=["part", "row"], how="anti"), spec.seed)
        state.test = _ranked(state.test, spec.seed) if state.test.height else state.test
        require_splits(state)
    return Plan(spec, parts, states)


def refuse_training_test_files(spec: MixtureSpec, files_of: list[list[InputFile]],
                               test_files_of: list[list[InputFile]]) -> None:
    """A test file that is one of the training files, by real path or by its bytes (a copy).

    Bytes rather than row ids: a copy is found exactly and cheaply (files of different sizes are
    not read). Rows rewritten into another file are not caught here, but their groups are then held
    out of training (held_out_group), and a source left with no training row is refused."""
    training = [(f, source) for source, files in zip(spec.sources, files_of) for f in files]
    for source, test_files in zip(spec.sources, test_files_of):
        for t in test_files:
            for f, owner in training:
                how = _same_input(t, f)
                if how:
                    raise UftDataError(
                        t.display, f"is the test file of source {source.path} and {how} training file "
                        f"{f.display} (source {owner.path}); its rows would be held out of training",
                        fix="Give a held-out file that is not a training source, or a test fraction (e.g. 0.01).")


def _same_input(a: InputFile, b: InputFile) -> str:
    """How two inputs are one: "the same file as", "a copy of", or "" when they differ."""
    if a.remote or b.remote:
        return "the same file as" if a.display == b.display else ""
    if a.path.resolve() == b.path.resolve():
        return "the same file as"
    return "a copy of" if filecmp.cmp(a.path, b.path, shallow=False) else ""


def require_rows(where: str, records: int, valid: int) -> None:
    """An input (a source, or a test file) without rows would silently make a mixture without it."""
    if records == 0:
        raise UftDataError(where, "holds no rows; refusing to build a mixture without this source",
                           fix="Check that the right file was passed, or drop it from the mix.")
    if valid == 0:
        raise UftDataError(where, f"holds no valid row (all {records} rejected)",
                           fix="Rerun with --on-error error to see the first problem.")


def require_splits(state: SourceState) -> None:
    """Each source gives training rows, and a test split when one was asked for."""
    path, test = state.spec.path, state.spec.test
    if not state.candidates.height:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(state.dropped.items()) if v)
        raise UftDataError(f"source {path}", f"has no training row left of its {state.records_in} ({dropped})",
                           fix="Check its test split and the sources before it (the first source wins duplicates).")
    if test is not None and test.fraction is not None and not state.test.height:
        groups = state.candidates["group"].n_unique()
        raise UftDataError(f"source {path}", f"test fraction {test.fraction:g} holds out none of its {groups} groups",
                           fix="Raise the fraction, or give no test split for this source.")


def source_names(spec: MixtureSpec, row_sources: list[frozenset[str]]) -> list[str]:
    """One name per source, the `source` value its rows carry, so the manifest, the card's table and
    its counts by source name it one way. A source whose rows carry several values, or the value of
    another source, is named after its path (mixspec.source_name)."""
    single = [next(iter(values)) if len(values) == 1 else None for values in row_sources]
    return [name if name is not None and single.count(name) == 1 else _source_name(s.path)
            for s, name in zip(spec.sources, single)]


def in_test_fraction(groups: pl.Series, fraction: float, seed: int) -> pl.Series:
    """True for groups whose keyed hash falls below `fraction` of the 64-bit range."""
    keys = groups.to_frame("g").select(pl.format("test:{}", "g")).to_series()
    hashed = keyed_uint64(keys, seed).to_frame("h")
    return hashed.select(pl.col("h") < pl.lit(int(fraction * _TWO_64), dtype=pl.UInt64)).to_series()


def _read_all(files: list[InputFile], parts: list[int], rejects: Rejects, state: SourceState | None) -> pl.DataFrame:
    before = rejects.count
    frames = [read_index(f, part, rejects) for f, part in zip(files, parts)]
    frames = [f for f in frames if f.height]
    rows = pl.concat(frames) if frames else pl.DataFrame(schema={
        **{c: schema.POLARS_SCHEMA[c] for c in INDEX_COLUMNS if c != "tie"}, "tie": pl.UInt64, "row": pl.Int64,
        "part": pl.Int32})
    if state is not None:
        state.records_in += rows.height + rejects.count - before
        state.dropped["invalid_row"] += rejects.count - before
    return rows


def _ranked(rows: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Rows sorted by their unit's rank; a pair's chosen row first."""
    rank = keyed_uint64(rows["unit"], seed).alias("rank")
    return rows.with_columns(rank).sort(["rank", "unit", "label", "part", "row"],
                                        descending=[False, False, True, False, False], nulls_last=True)


def _source_name(path: str) -> str:
    if is_hub_url(path):  # hf://datasets/ORG/NAME@REV[/PATH]: the file's name, else the dataset's
        url = parse_url(path)
        return source_name((url.path or url.repo_id).rstrip("/").rsplit("/", 1)[-1])
    return source_name(Path(path).resolve().name)


# ---------------------------------------------------------------------------------------------
# Counts and taking


def resolve_counts(spec: MixtureSpec, states: list[SourceState]) -> list[int]:
    """Rows to take from each source: counts as given, `all`, and fractions of the final mixture
    (of `total`, or of the total implied by the absolute counts), largest-remainder rounded in units.
    Every source gives at least one unit: a fraction that rounds to nothing is an error."""
    counts = _counts(spec, states)
    for state, n in zip(states, counts):
        if n == 0:
            raise UftDataError(f"source {state.spec.path}", f"take {state.spec.take.text} rounds to 0 rows of this "
                               f"mixture ({sum(counts)} rows)", fix="Raise the fraction or the total.")
    return counts


def _counts(spec: MixtureSpec, states: list[SourceState]) -> list[int]:
    takes = [s.take for s in spec.sources]
    fractions = {i: t.fraction for i, t in enumerate(takes) if t.fraction is not None}
    fixed = {i: st.candidates.height if t.count is None else t.count
             for i, (t, st) in enumerate(zip(takes, states)) if i not in fractions}  # a count, or all rows
    if not fractions:
        return list(fixed.values())
    fractional = list(fractions)
    absolute = sum(fixed.values())
    share = sum(fractions.values())
    if spec.total is not None and absolute + math.floor(share * spec.total + 0.5) > spec.total:
        raise UftDataError("total", f"is {spec.total} rows, fewer than the {absolute} rows of the absolute counts plus "
                           f"the fractions ({share:g} of the total)", got=spec.total,
                           fix="Raise --total (recipe: mixture.total), or lower the counts or the fractions.")
    total = spec.total if spec.total is not None else absolute / (1 - share)
    rows = {i: fractions[i] * total for i in fractional}
    units = {i: int(rows[i] // states[i].unit_rows) for i in fractional}
    # Largest remainder, in rows: units go to the largest remainders until the rounded total is
    # reached (a pair may overshoot it by one row).
    remaining = math.floor(sum(rows.values()) + 0.5) - sum(units[i] * states[i].unit_rows for i in fractional)
    for i in sorted(fractional, key=lambda i: (-(rows[i] - units[i] * states[i].unit_rows), i)):
        if remaining <= 0:
            break
        units[i] += 1
        remaining -= states[i].unit_rows
    return [units[i] * states[i].unit_rows if i in units else fixed[i] for i in range(len(takes))]


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


@dataclass
class Selection:
    """One mixture's rows: per source the rows taken (`copy` numbers repeats) and how many were
    repeats; the splits in their final order (`src` is the source's index)."""

    taken: list[pl.DataFrame]
    repeats: list[int]
    splits: dict[str, pl.DataFrame]


def select(planned: Plan, spec: MixtureSpec) -> Selection:
    """Resolve the counts of `spec` (one mixture of a sweep) and take its rows; writes nothing, so a
    sweep finds a count it cannot meet before any mixture is written."""
    taken, repeats = [], []
    for i, (state, count) in enumerate(zip(planned.sources, resolve_counts(spec, planned.sources))):
        rows, repeated = take(state, count, spec.on_short)
        taken.append(rows.with_columns(src=pl.lit(i, dtype=pl.Int32)))
        repeats.append(repeated)
    splits = {"train": final_order(pl.concat(taken), spec.seed)}
    tests = [s.test.with_columns(src=pl.lit(i, dtype=pl.Int32), copy=pl.lit(0, dtype=pl.Int32))
             for i, s in enumerate(planned.sources) if s.test.height]
    if tests:
        splits["test"] = final_order(pl.concat(tests), spec.seed)
    return Selection(taken, repeats, splits)


def final_order(selected: pl.DataFrame, seed: int) -> pl.DataFrame:
    """All sources' rows in one rank order; repeated copies get their own rank."""
    copy_key = pl.when(pl.col("copy") == 0).then(pl.col("unit")).otherwise(pl.format("{}#{}", "unit", "copy"))
    keys = selected.select(copy_key.alias("k"))["k"]
    order = selected.with_columns(order=keyed_uint64(keys, seed))
    return order.sort(["order", "unit", "copy", "label", "part", "row"],
                      descending=[False, False, False, True, False, False], nulls_last=True)
