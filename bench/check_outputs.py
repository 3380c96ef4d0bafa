"""Checks on a benchmark's outputs, run after the timed processes (not timed).

    python bench/check_outputs.py UNFOLD.parquet DATASETS.parquet DATASETS_IDS.parquet

- `uftdata unfold` and both `datasets.map` unfoldings hold the same rows: the same source_ids
  (record id and turn), and against the --ids variant the same id and group for each, so the same
  prompt and completion text. Row order may differ.
- bench/io_floor.py writes with uftdata/writer.py's settings, so it is the floor for that output.
Every problem is printed; exit status 1 if there is any.
"""

from __future__ import annotations

import sys
from pathlib import Path

import io_floor  # bench/io_floor.py: this script's folder is on sys.path
import polars as pl
import pyarrow.parquet as pq

from uftdata import writer


def row_problems(ours: Path, theirs: Path, keys: list[str]) -> list[str]:
    n_ours, n_theirs = pq.ParquetFile(ours).metadata.num_rows, pq.ParquetFile(theirs).metadata.num_rows
    if n_ours != n_theirs:
        return [f"{theirs}: {n_theirs} rows; expected {n_ours} as in {ours} (the unfoldings disagree)"]
    a = pl.read_parquet(ours, columns=keys).sort(keys).with_row_index()
    b = pl.read_parquet(theirs, columns=keys).sort(keys).with_row_index()
    if a.equals(b):
        return []
    both = a.join(b, on="index", suffix="_theirs")
    first = both.filter(pl.any_horizontal(pl.col(k) != pl.col(f"{k}_theirs") for k in keys)).head(1)
    return [f"{theirs}: {keys} differ from {ours}; first difference, after sorting by {keys}: {first.to_dicts()}"]


def setting_problems() -> list[str]:
    ours = (writer.ROW_GROUP_ROWS, writer.COMPRESSION, writer.COMPRESSION_LEVEL)
    floor = (io_floor.ROW_GROUP_ROWS, io_floor.COMPRESSION, io_floor.COMPRESSION_LEVEL)
    if floor == ours:
        return []
    return [f"bench/io_floor.py: writes with (row group rows, compression, level) {floor}; expected {ours} as "
            "uftdata/writer.py. Make them equal."]


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit("usage: python bench/check_outputs.py UNFOLD.parquet DATASETS.parquet DATASETS_IDS.parquet")
    unfold, plain, with_ids = map(Path, argv)
    problems = [
        *row_problems(unfold, plain, ["source_id"]),
        *row_problems(unfold, with_ids, ["source_id", "id", "group"]),
        *setting_problems(),
    ]
    for problem in problems:
        print(f"MISMATCH: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"ok: the three unfoldings hold the same {pq.ParquetFile(unfold).metadata.num_rows} rows")


if __name__ == "__main__":
    main(sys.argv[1:])
