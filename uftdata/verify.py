"""Is a mixture folder exactly what its `manifest.json` says it is?

`uft-train`, `export` and `publish` refuse a folder that is not (`check_mixture`, exit 2 naming the
file and what differs); `inspect` lists every problem (`mixture_problems`). Checked, in order:
1. `manifest.json` reads as a manifest (`uftdata.manifest.read_manifest`: JSON, fields, types).
2. The files: every listed shard is there with its sha256 (and size), and nothing unlisted lies under
   `data/` (`datasets` loads every `data/{split}-*` file the card's patterns match).
3. The manifest's claims, against the rows' small columns (id, kind, score, label, pair_id,
   source), once the shards are the ones it pins: each shard's row count; the counts per split, by
   source and by kind; the sources' train/test/repeated rows; the content hash recomputed; and
   each split's row order, which must be the rank order of the manifest's seed (`mix.final_order`:
   xxh3 of (seed, unit), a repeated copy keyed `unit#copy`). A hand-edited count, seed or content
   hash is caught here, though every sha256 matches.
Not checked: the accounting of what was dropped upstream (`sources[].accounting`, `dropped`), which
no file in the folder can confirm, and README.md, which `publish` regenerates from the manifest.

Cost: one sha256 pass over the shard bytes plus one read of the small columns; see the README
("Verification") for the figures on a 1 GB mixture (bench/bench_verify.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from uftdata import schema
from uftdata.errors import UftDataError
from uftdata.ids import keyed_uint64
from uftdata.manifest import MANIFEST, SPLIT_ORDER, Manifest, SplitCounts, read_manifest
from uftdata.mixout import content_hash, sha256_file, split_counts

READ_COLUMNS = ["id", "kind", "score", "label", "pair_id", "source"]  # content hash, counts, order, histogram
FIX = "Rebuild the mixture with `uftdata mix`, or restore the file."
Problem = tuple[str, str]  # (path relative to the mixture folder, what differs)


@dataclass(frozen=True)
class Verified:
    """A mixture that matches its manifest, and its splits' READ_COLUMNS in row order."""

    manifest: Manifest
    splits: dict[str, pl.DataFrame]


def check_mixture(folder: Path) -> Manifest:
    """The manifest of the mixture folder `folder`; UftDataError naming the first file that differs."""
    return verify_mixture(folder).manifest


def verify_mixture(folder: Path) -> Verified:
    """Like check_mixture, and the small columns it read (publish draws its histogram from them)."""
    folder = Path(folder)
    manifest = read_manifest(folder)  # its own errors name the field
    problems, splits = _problems(folder, manifest)
    if problems:
        path, what = problems[0]
        more = f" ({len(problems) - 1} more problem(s); `uftdata inspect {folder}` lists all)" if len(problems) > 1 else ""
        raise UftDataError(str(folder / path), what + more, fix=FIX)
    assert splits is not None  # no problem: every shard was read
    return Verified(manifest, splits)


def mixture_problems(folder: Path) -> list[str]:
    """One line per difference between `folder` and its manifest, `PATH: what`; empty when it matches."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except UftDataError as error:
        return [UftDataError(MANIFEST, error.what, got=error.got, expected=error.expected).line().removesuffix(".")]
    return [f"{path}: {what}" for path, what in _problems(folder, manifest)[0]]


def _problems(folder: Path, manifest: Manifest) -> tuple[list[Problem], dict[str, pl.DataFrame] | None]:
    """Every difference, and the splits' small columns when every shard is the one listed."""
    problems = _file_problems(folder, manifest)
    if problems:  # the rows of a changed shard are not the ones the manifest describes
        return problems, None
    splits, problems = _read_splits(folder, manifest)
    if problems:
        return problems, None
    problems = _count_problems(manifest, splits)
    found = content_hash(splits)
    if found != manifest.content_hash:
        problems.append((MANIFEST, f"content_hash does not match the rows of the shards (they hash to {found})"))
    problems += _order_problems(manifest, splits)
    return problems, splits


def _file_problems(folder: Path, manifest: Manifest) -> list[Problem]:
    problems = []
    for shard in manifest.files:
        file = folder / shard.path
        if not file.is_file():
            problems.append((shard.path, "listed in manifest.json but missing"))
        elif file.stat().st_size != shard.bytes or sha256_file(file) != shard.sha256:  # the size spares a hash
            problems.append((shard.path, "sha256 differs from manifest.json (modified after mixing)"))
    listed = {shard.path for shard in manifest.files}
    data = folder / "data"
    extra = sorted(p.relative_to(folder).as_posix() for p in data.rglob("*")
                   if p.is_file() and not p.name.startswith(".")) if data.is_dir() else []
    problems += [(path, "not listed in manifest.json (added after mixing)") for path in extra if path not in listed]
    return problems


def _read_splits(folder: Path, manifest: Manifest) -> tuple[dict[str, pl.DataFrame], list[Problem]]:
    """Each split's small columns, shards in name order, splits in the order mix hashed them."""
    parts: dict[str, list[pl.DataFrame]] = {}
    problems = []
    for shard in sorted(manifest.files, key=lambda f: f.path):
        try:
            file = pq.ParquetFile(folder / shard.path)
            wrong = schema.schema_problems(file.schema_arrow)
            table = None if wrong else file.read(columns=READ_COLUMNS)
        except (pa.ArrowException, OSError) as error:
            problems.append((shard.path, f"cannot be read as Parquet ({' '.join(str(error).split())})"))
            continue
        if wrong:
            problems.append((shard.path, f"is not in the row schema ({'; '.join(wrong)})"))
            continue
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        if frame.height != shard.rows:
            at = manifest.files.index(shard)
            problems.append((MANIFEST, f"files[{at}].rows is {shard.rows}; {shard.path} holds {frame.height} rows"))
        parts.setdefault(shard.split, []).append(frame)
    order = [s for s in SPLIT_ORDER if s in parts] + sorted(s for s in parts if s not in SPLIT_ORDER)
    return {split: pl.concat(parts[split]) for split in order}, problems


def _count_problems(manifest: Manifest, splits: dict[str, pl.DataFrame]) -> list[Problem]:
    """`counts` against the shards, then the per-source sums against `counts` and the shards."""
    return _split_count_problems(manifest, splits) + _source_sum_problems(manifest, splits)


def _split_count_problems(manifest: Manifest, splits: dict[str, pl.DataFrame]) -> list[Problem]:
    problems = []
    if set(manifest.counts) != set(splits):
        problems.append((MANIFEST, f"counts lists splits {sorted(manifest.counts)}; the shards hold {sorted(splits)}"))
    for split, rows in splits.items():
        claimed, found = manifest.counts.get(split), split_counts(rows)
        if claimed is None:
            continue
        if claimed.rows != found.rows:
            problems.append((MANIFEST, f"counts.{split}.rows is {claimed.rows}; the shards hold {found.rows}"))
        for field in ("by_source", "by_kind"):
            listed, held = getattr(claimed, field), getattr(found, field)
            for key in sorted(set(listed) | set(held)):
                if listed.get(key) != held.get(key):
                    problems.append((MANIFEST, f"counts.{split}.{field}.{key} is {listed.get(key, 'absent')}; "
                                               f"the shards hold {held.get(key, 0)}"))
    return problems


def _source_sum_problems(manifest: Manifest, splits: dict[str, pl.DataFrame]) -> list[Problem]:
    problems = []
    empty = SplitCounts(0, {}, {})
    for field, split in (("rows_train", "train"), ("rows_test", "test")):
        total = sum(getattr(s, field) for s in manifest.sources)
        if total != manifest.counts.get(split, empty).rows:
            problems.append((MANIFEST, f"sources[].{field} sum to {total}; counts.{split}.rows is "
                                       f"{manifest.counts.get(split, empty).rows}"))
    if "train" in splits:
        train = with_unit(splits["train"])
        repeated = train.height - train.select("unit", "id").n_unique() if train.height else 0
        claimed_repeats = sum(s.repeated_rows for s in manifest.sources)
        if claimed_repeats != repeated:
            problems.append((MANIFEST, f"sources[].repeated_rows sum to {claimed_repeats}; the train split "
                                       f"repeats {repeated} rows"))
    return problems


def _order_problems(manifest: Manifest, splits: dict[str, pl.DataFrame]) -> list[Problem]:
    problems = []
    for split, rows in splits.items():
        row = first_out_of_order(rows, manifest.seed, repeats=split == "train")
        if row is not None:
            problems.append((MANIFEST, f"seed {manifest.seed} does not give the {split} split's row order "
                                       f"(row {row}, id {rows['id'][row]}, is out of place)"))
    return problems


def with_unit(rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with `unit`, what mix ranks and deduplicates by: the pair for pairwise rows, else the row."""
    return rows.with_columns(unit=pl.when(pl.col("kind") == "pairwise").then(pl.col("pair_id")).otherwise(pl.col("id")))


def first_out_of_order(rows: pl.DataFrame, seed: int, *, repeats: bool) -> int | None:
    """The first position where `rows` leave the order `mix.final_order` gives them under `seed`; None
    when they are in it. Copies of a repeated row are alike, so the k-th occurrence of a row is
    given the k-th smallest of its copies' keys (`unit`, `unit#1`, ...): the order mix wrote them in.
    `repeats`: False for the test split, whose rows are all copy 0 (a test file may repeat a row)."""
    frame = with_unit(rows).select("unit", "id", "label").with_row_index("pos")
    if repeats and frame.select("unit", "id").n_unique() < frame.height:
        ranked = _with_copy_keys(frame, seed)
    else:  # every row is copy 0, keyed by its unit
        ranked = frame.with_columns(copy=pl.lit(0, dtype=pl.Int64), order=keyed_uint64(frame["unit"], seed))
    # `pos` last: rows alike in every key (a test file may hold one twice) may come in any order.
    expected = ranked.sort(["order", "unit", "copy", "label", "pos"], descending=[False, False, False, True, False],
                           nulls_last=True)["pos"]
    wrong = (expected != pl.Series(range(len(expected)), dtype=expected.dtype)).arg_true()
    return int(wrong[0]) if len(wrong) else None


def _with_copy_keys(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    """`frame` (unit, id, label, pos) with each row's `copy` and its key's `order`: the k-th
    occurrence of a row gets the copy with the k-th smallest key."""
    frame = frame.with_columns(occurrence=pl.int_range(pl.len()).over("unit", "id"), copies=pl.len().over("unit", "id"))
    keys = (frame.unique(["unit", "id"]).select("unit", "id", copy=pl.int_ranges(pl.col("copies"))).explode("copy")
            .with_columns(key=pl.when(pl.col("copy") == 0).then(pl.col("unit"))
                          .otherwise(pl.format("{}#{}", "unit", "copy"))))
    keys = keys.with_columns(order=keyed_uint64(keys["key"], seed))
    keys = keys.with_columns(occurrence=pl.col("order").rank("ordinal").over("unit", "id").cast(pl.Int64) - 1)
    return frame.join(keys.select("unit", "id", "occurrence", "copy", "order"), on=["unit", "id", "occurrence"],
                      how="left")
