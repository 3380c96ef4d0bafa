"""Reading input records: JSONL, JSON arrays and Parquet, each optionally gzipped, or folders of them.

Two ways in, sharing file discovery (`uftdata.inputs`) and error wording:
- `iter_frames`: the streaming fast path for the big inputs (unfold). JSONL is parsed in blocks by
  pyarrow's JSON reader against the layout's Arrow schema; a block that fails (bad JSON, a wrong
  type, invalid UTF-8, blank lines) is re-read line by line to name the exact line and field
  (`uftdata.arrowcheck`).
- `iter_records`: Python dicts, for the per-record adapters of `score` and `feedback`.
Every record carries its position: `line N` (JSONL, 1-based), `record N` (JSON arrays, 1-based) or
`row N` (Parquet, 0-based, as `datasets` indexes it).

A file that cannot be read at all (a damaged or non-gzip `.gz`, a damaged or empty Parquet file)
is one `UftDataError` naming the file and what is wrong, never a zlib or Arrow traceback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json

from uftdata.arrowcheck import cast_columns, check_required, parse_block, records_to_table
from uftdata.errors import RecordError, UftDataError
from uftdata.gzipcheck import CheckedGzipFile, DamagedGzip
from uftdata.inputs import InputFile, Progress, expand_inputs, first_line, open_bytes
from uftdata.rejects import Rejects

# `InputFile`, `Progress` and `expand_inputs` live in `uftdata.inputs`; the commands import them from here too.
__all__ = [
    "BLOCK_BYTES", "LINE", "PARQUET_BATCH_ROWS", "InputFile", "Progress", "expand_inputs", "first_record",
    "iter_frames", "iter_records",
]

BLOCK_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 16_384
LINE = "_line"  # the position column every frame from `iter_frames` carries
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")  # a literal first byte keeps the scan fast
_BLANK_FIRST_LINE = re.compile(rb"[ \t\r]*\n")


# ---------------------------------------------------------------------------------------------
# Python records


def first_record(f: InputFile, *, skip_bad: bool = False) -> tuple[str, dict]:
    """(where, record) of the first record, for layout detection; an empty file is an error.
    With `skip_bad`, malformed records before it are passed over (the real pass rejects them)."""
    passed_over = Rejects("skip" if skip_bad else "raise")
    for where, record in iter_records(f, passed_over):
        return where, record
    if passed_over.count:
        raise UftDataError(f.name, f"holds no valid record; the first: {passed_over.records[0]['error']}")
    raise UftDataError(f.name, "file holds no records", fix="Check that the right file was passed.")


def iter_records(f: InputFile, rejects: Rejects, progress: Progress | None = None) -> Iterator[tuple[str, dict]]:
    """(where, record) for every record; malformed records go through `rejects`."""
    if f.container == "parquet":
        for start, table in _parquet_batches(f, None, progress):
            for i, record in enumerate(table.to_pylist()):
                yield f.where(start + i), record
    elif f.container == "json":
        for i, record in enumerate(_json_array(f), start=1):
            if progress:
                progress(0)
            where = f.where(i)
            if isinstance(record, dict):
                yield where, record
            else:
                rejects.reject(RecordError(where, "", "is not a JSON object", got=type(record).__name__), record)
    else:
        for lineno, line in _jsonl_lines(f, progress):
            parsed = _parse_line(f, lineno, line, rejects)
            if parsed is not None:
                yield f.where(lineno), parsed


def _parse_line(f: InputFile, lineno: int, line: bytes, rejects: Rejects) -> dict | None:
    where = f.where(lineno)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        rejects.reject(RecordError(where, "", f"is not valid UTF-8 (byte {e.start})"), line.decode("utf-8", "replace"))
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        rejects.reject(RecordError(where, "", f"is not JSON ({e.msg} at column {e.colno})"), text)
        return None
    if not isinstance(record, dict):
        rejects.reject(RecordError(where, "", "is not a JSON object", got=type(record).__name__), record)
        return None
    return record


def _jsonl_lines(f: InputFile, progress: Progress | None) -> Iterator[tuple[int, bytes]]:
    for start, block in _jsonl_blocks(f, progress):
        for offset, line in enumerate(block.split(b"\n")):
            if line.strip():
                yield start + offset, line


def _jsonl_blocks(f: InputFile, progress: Progress | None, size: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(first line number, bytes) blocks that end at a line break; no line is split."""
    size = size or BLOCK_BYTES
    line, carry = 1, b""
    with open_bytes(f) as stream:
        raw = stream.compressed if isinstance(stream, CheckedGzipFile) else stream  # compressed bytes read
        last = 0
        while True:
            try:
                chunk = stream.read(size)
            except DamagedGzip as e:
                raise e.after_line(line - 1) from None
            if progress:
                pos = raw.tell()
                progress(pos - last)
                last = pos
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            block, carry = data[: cut + 1], data[cut + 1 :]
            yield line, block
            line += block.count(b"\n")
    if carry.strip():
        yield line, carry


def _json_array(f: InputFile) -> list:
    # A JSON array cannot be streamed without a streaming parser; big inputs should be JSONL or Parquet.
    with open_bytes(f) as stream:
        data = stream.read()
    try:
        parsed = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UftDataError(f.name, f"is not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UftDataError(f"{f.name}: line {e.lineno}", f"is not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(parsed, list):
        raise UftDataError(f.name, "top level is not a JSON array or one object per line", got=type(parsed).__name__)
    return parsed


def _parquet_batches(
    f: InputFile, columns: Sequence[str] | None, progress: Progress | None
) -> Iterator[tuple[int, pa.Table]]:
    file = f.parquet()
    if file.metadata.num_rows == 0:
        raise UftDataError(f.name, "file holds no records", fix="Check that the right file was passed.")
    present = None if columns is None else [c for c in columns if c in file.schema_arrow.names]
    start, total = 0, f.size()
    batches = file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=present)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowInvalid, OSError) as e:  # a damaged page: zstd, thrift or checksum errors
            what = "cannot be read from the Hub" if f.remote else "cannot be read: the Parquet data is damaged"
            raise UftDataError(f"{f.display}: {f.unit} {start}", f"{what} ({first_line(e)})",
                               fix="" if f.remote else "Write or download the file again.") from None
        if batch is None:
            return
        if progress:
            progress(int(total * batch.num_rows / file.metadata.num_rows))
        yield start, pa.Table.from_batches([batch])
        start += batch.num_rows


# ---------------------------------------------------------------------------------------------
# Arrow frames (fast path)


def iter_frames(
    f: InputFile,
    schema: pa.Schema,
    required: Sequence[str],
    rejects: Rejects,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """Frames with `schema`'s columns plus `_line`; records missing a required field are rejected."""
    for table, positions in _tables(f, schema, required, rejects, progress):
        kept, at = check_required(f, table, positions, required, rejects)
        if kept.num_rows:
            frame = pl.from_arrow(kept)
            assert isinstance(frame, pl.DataFrame)  # a Table converts to a frame, a column to a Series
            yield frame.with_columns(pl.Series(LINE, at, dtype=pl.Int64))


def _tables(
    f: InputFile, schema: pa.Schema, required: Sequence[str], rejects: Rejects, progress: Progress | None
) -> Iterator[tuple[pa.Table, list[int] | range]]:
    if f.container == "parquet":
        for start, table in _parquet_batches(f, schema.names, progress):
            yield cast_columns(f, table, schema), range(start, start + table.num_rows)
    elif f.container == "json":
        records = [(f.where(i), r) for i, r in enumerate(_json_array(f), start=1)]
        yield records_to_table(records, schema, required, rejects)
    else:
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        for start, block in _jsonl_blocks(f, progress):
            table = parse_block(block, options)
            n_lines = block.count(b"\n") + (not block.endswith(b"\n"))
            # pyarrow skips blank lines and accepts two objects on one line; only when neither can
            # have happened do rows map to lines one to one.
            blank = _BLANK_FIRST_LINE.match(block) or _BLANK_LINE.search(block)
            missing = table is not None and any(table[name].null_count for name in required)
            # A record with a missing field is re-read as Python so that its rejects entry is the
            # record as written, not the parsed columns.
            if table is not None and table.num_rows == n_lines and not blank and not missing:
                yield table, range(start, start + n_lines)
            else:  # name the exact line and field, or map around blank lines
                lines = [(n, line) for n, line in enumerate(block.split(b"\n"), start=start) if line.strip()]
                parsed = [(f.where(n), _parse_line(f, n, line, rejects)) for n, line in lines]
                yield records_to_table([(w, r) for w, r in parsed if r is not None], schema, required, rejects)

