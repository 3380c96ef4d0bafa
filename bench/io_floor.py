"""The I/O floor: pyarrow's plain read and write of an unfold output, with our writer's settings.

    python bench/io_floor.py UNFOLDED.parquet OUT.parquet

Reads the whole file `uftdata unfold` wrote and writes it again with zstd level 3 and row groups
of 5,000 rows (uftdata/writer.py), with no transform in between: no unfold of the same output can
be cheaper than decoding the bytes it writes and encoding them again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq

# The same values as uftdata/writer.py (ROW_GROUP_ROWS, COMPRESSION, COMPRESSION_LEVEL), written
# out rather than imported so this process does not pay for importing uftdata (polars).
ROW_GROUP_ROWS = 5_000
COMPRESSION, COMPRESSION_LEVEL = "zstd", 3


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python bench/io_floor.py UNFOLDED.parquet OUT.parquet")
    source, out = Path(argv[0]), Path(argv[1])
    table = pq.read_table(source)
    pq.write_table(
        table, out, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL, row_group_size=ROW_GROUP_ROWS
    )
    print(f"io_floor: {table.num_rows} rows read from {source} and written to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
