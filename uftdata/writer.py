"""Parquet output in the canonical schema and layout (docs/design.md: zstd 3, row groups of 5,000 rows)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from uftdata import schema
from uftdata.atomic import atomic_path

ROW_GROUP_ROWS = 5_000
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3
SUMMARY_KEY = "uft.summary"  # the footer key holding the command's summary (accounting.Summary)


class RowWriter:
    """Appends frames in the row schema; row groups are exactly ROW_GROUP_ROWS rows (the last may be
    shorter) whatever the sizes of the frames appended, so the file bytes do not depend on how the
    input was split into blocks.

    Compression and writing run on one background thread (pyarrow releases the GIL), so the next
    block is parsed and transformed while this one is compressed: zstd is about half of an unfold's
    work. At most MAX_IN_FLIGHT tables wait, which bounds memory.
    """

    MAX_IN_FLIGHT = 2

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(
            path,
            schema.SCHEMA,
            compression=COMPRESSION,
            compression_level=COMPRESSION_LEVEL,
            write_statistics=True,
        )
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uft-writer")
        self._in_flight: deque[Future[None]] = deque()

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        table = frame if isinstance(frame, pa.Table) else schema.to_arrow(frame)
        if not table.num_rows:
            return
        self.rows += table.num_rows
        while len(self._in_flight) >= self.MAX_IN_FLIGHT:
            self._in_flight.popleft().result()
        self._in_flight.append(self._pool.submit(self._append, table))

    def _append(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        full = table.num_rows if final else table.num_rows - table.num_rows % ROW_GROUP_ROWS
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=ROW_GROUP_ROWS)
        rest = table.slice(full)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Flush and close; `metadata` goes into the file footer (e.g. the command's summary)."""
        try:
            while self._in_flight:
                self._in_flight.popleft().result()
            self._flush(final=True)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            if metadata:
                self._writer.add_key_value_metadata(metadata)
            self._writer.close()


@contextmanager
def open_rows(path: Path, metadata: dict[str, str] | None = None, *, overwrite: bool = False,
              inputs: Iterable[Path] = ()) -> Iterator[RowWriter]:
    """A RowWriter whose file appears at `path` only when the block completes. `metadata` is read
    at the end, so the caller may fill it (e.g. with the summary) inside the block. An existing file
    is replaced only if uftdata wrote it (`written_by_uftdata`) or with `overwrite`."""
    with atomic_path(Path(path), overwrite=overwrite, owned=written_by_uftdata, inputs=inputs) as tmp:
        writer = RowWriter(tmp)
        try:
            yield writer
        finally:
            writer.close(metadata)


def written_by_uftdata(path: Path) -> bool:
    """A Parquet file whose footer holds the summary that unfold, score and feedback write (SUMMARY_KEY)."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException):
        return False
    return SUMMARY_KEY.encode() in metadata
