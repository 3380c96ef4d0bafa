"""Reading input files: JSONL, JSON arrays and Parquet, each optionally gzipped, or folders of them.

Two ways in, sharing file discovery and error wording:
- `iter_frames`: the streaming fast path for the big inputs (unfold). JSONL is parsed in blocks by
  pyarrow's JSON reader against the layout's Arrow schema; a block that fails (bad JSON, a wrong
  type, invalid UTF-8, blank lines) is re-read line by line to name the exact line and field.
- `iter_records`: Python dicts, for the per-record adapters of `score` and `feedback`.
Every record carries its position: `line N` (JSONL, 1-based), `record N` (JSON arrays, 1-based) or
`row N` (Parquet, 0-based, as `datasets` indexes it).

A file that cannot be read at all (a damaged or non-gzip `.gz`, a damaged or empty Parquet file)
is one `UftDataError` naming the file and what is wrong, never a zlib or Arrow traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from uftdata.errors import RecordError, UftDataError
from uftdata.hub import HubOptions, RemoteFile, is_hub_url, resolve
from uftdata.rejects import Rejects

Container = Literal["jsonl", "json", "parquet"]
SUFFIXES: dict[str, Container] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
BLOCK_BYTES = 16 << 20
PARQUET_BATCH_ROWS = 16_384
LINE = "_line"  # the position column every frame from `iter_frames` carries
_BLANK_LINE = re.compile(rb"\n[ \t\r]*\n")  # a literal first byte keeps the scan fast
_BLANK_FIRST_LINE = re.compile(rb"[ \t\r]*\n")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class InputFile:
    path: Path  # for a Hub file, its path inside the repository
    container: Container
    gzipped: bool
    remote: RemoteFile | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def display(self) -> str:
        """The file as the user named it: a local path or its hf:// URL."""
        return self.remote.url if self.remote else str(self.path)

    def provenance(self) -> dict:
        """Where the rows came from, for summaries and manifests: a Hub file's URL, commit and license."""
        return self.remote.provenance() if self.remote else {}

    def open(self) -> IO[bytes]:
        """The file's bytes as stored (still gzipped); seekable for Parquet (Hub: byte ranges)."""
        if self.remote:
            return self.remote.open(seekable=self.container == "parquet")
        return open(self.path, "rb")

    def parquet(self) -> pq.ParquetFile:
        """The Parquet file's reader (its footer read); a file that is not Parquet is one error line."""
        try:
            return pq.ParquetFile(_open(self) if self.gzipped else self.open() if self.remote else self.path)
        except (pa.ArrowInvalid, OSError) as e:
            if not self.remote and self.size() == 0:
                raise UftDataError(self.display, "is empty (0 bytes), not a Parquet file",
                                   fix="Check that the right file was passed, or write it again.") from None
            raise UftDataError(self.display, f"is not a Parquet file, or is damaged ({_first_line(e)})") from None

    @property
    def unit(self) -> str:
        return {"jsonl": "line", "json": "record", "parquet": "row"}[self.container]

    def where(self, position: int) -> str:
        return f"{self.name}: {self.unit} {position}"

    def size(self) -> int:
        return self.remote.size if self.remote else self.path.stat().st_size


def expand_inputs(paths: Sequence[str | Path], hub: HubOptions | None = None) -> list[InputFile]:
    """Files named directly, plus the supported files inside named folders (sorted, recursive), plus
    the files of a Hub dataset (`hf://datasets/ORG/NAME...`, one config and split, see uftdata.hub)."""
    if not paths:
        raise UftDataError("inputs", "no input files given", fix="Pass one or more files or folders.")
    files: list[InputFile] = []
    for raw in paths:
        if is_hub_url(str(raw)):
            files.extend(_hub_files(str(raw), hub or HubOptions()))
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _container(p) is not None)
            if not found:
                raise UftDataError(str(path), "folder holds no .jsonl, .json or .parquet files (optionally .gz)")
            files.extend(_input_file(p) for p in found)
        elif path.is_file():
            files.append(_input_file(path))
        else:
            raise UftDataError(str(path), "no such file or folder")
    return files


def _hub_files(url: str, options: HubOptions) -> list[InputFile]:
    suffixes = tuple(s + gz for s in SUFFIXES for gz in ("", ".gz"))
    remote = resolve(url, options, suffixes)
    files = []
    for r in remote:
        container = _container(Path(r.path))
        assert container is not None  # resolve() keeps supported suffixes only
        if container == "json":  # one object per line, or an array: look at the first byte
            with r.open(seekable=False) as stream:
                head = _CheckedGzipFile(r.url, stream).read(4096) if r.path.endswith(".gz") else stream.read(4096)
            container = "jsonl" if head.lstrip()[:1] == b"{" else "json"
        files.append(InputFile(Path(r.path), container, r.path.lower().endswith(".gz"), r))
    return files


def _container(path: Path) -> Container | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def _input_file(path: Path) -> InputFile:
    container = _container(path)
    if container is None:
        raise UftDataError(
            str(path), "unsupported file type", got=path.suffix, expected=", ".join(SUFFIXES) + " (or .gz of those)"
        )
    gzipped = path.suffix.lower() == ".gz"
    if container == "json" and _first_byte(path, gzipped) == b"{":
        container = "jsonl"  # a .json file holding one object per line
    return InputFile(path, container, gzipped)


def _open(f: InputFile | Path, gzipped: bool | None = None) -> IO[bytes]:
    """Decompressed bytes of a file; a damaged `.gz` raises `DamagedGzip` naming the file."""
    if isinstance(f, InputFile):
        if f.gzipped:
            return _CheckedGzipFile(f.display, f.open())  # type: ignore[return-value]
        f, gzipped = f.path, f.gzipped
    return _CheckedGzipFile(str(f), open(f, "rb")) if gzipped else open(f, "rb")


class DamagedGzip(UftDataError):
    """A `.gz` input that is not gzip, is truncated, or fails its checksum."""

    def __init__(self, name: str, what: str, fix: str = "") -> None:
        self.name = name
        super().__init__(name, what, fix=fix)

    def after_line(self, line: int) -> DamagedGzip:
        """The same error, saying how far the lines were read intact (when any were)."""
        if line < 1:
            return self
        return DamagedGzip(self.name, f"{self.what} (the damage is after line {line})", self.fix)


class _CheckedGzipFile(gzip.GzipFile):
    """A GzipFile that owns the stream it was given and turns zlib's and gzip's exceptions (which
    the CLI would show as a traceback, or click as a bare "Aborted!" for EOFError) into `DamagedGzip`.
    Every decompressing entry point is covered: pyarrow seeks and reads a gzipped Parquet file."""

    def __init__(self, name: str, raw: IO[bytes]) -> None:
        self._name = name
        super().__init__(fileobj=raw, mode="rb")

    def read(self, size: int | None = -1) -> bytes:
        with self._checked():
            return super().read(size)

    def read1(self, size: int = -1) -> bytes:
        with self._checked():
            return super().read1(size)

    def peek(self, n: int) -> bytes:
        with self._checked():
            return super().peek(n)

    def readline(self, size: int | None = -1) -> bytes:
        with self._checked():
            return super().readline(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._checked():
            return super().seek(offset, whence)

    @contextmanager
    def _checked(self) -> Iterator[None]:
        try:
            yield
        except EOFError:
            raise DamagedGzip(self._name, "is truncated: its gzip stream ends before the end marker",
                              fix="Download or copy the file again.") from None
        except gzip.BadGzipFile as e:
            if str(e).startswith("Not a gzipped file"):
                raise DamagedGzip(self._name, "is not gzip (it does not start with the gzip magic bytes)",
                                  fix="If it is plain text or Parquet, rename it without `.gz`.") from None
            raise DamagedGzip(self._name, f"is damaged: its gzip data fails the check ({e})",
                              fix="Download or copy the file again.") from None
        except zlib.error as e:
            raise DamagedGzip(self._name, f"is damaged: its gzip data cannot be decompressed ({e})",
                              fix="Download or copy the file again.") from None

    def close(self) -> None:
        raw = self.fileobj
        super().close()
        if raw is not None:
            raw.close()


def _first_line(error: BaseException) -> str:
    """An Arrow or OS error message on one line, for an error that quotes it."""
    return " ".join(str(error).split()) or type(error).__name__


def _first_byte(path: Path, gzipped: bool) -> bytes:
    with _open(path, gzipped) as stream:
        while chunk := stream.read(4096):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]
    return b""


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
    with _open(f) as stream:
        raw = stream.fileobj if isinstance(stream, gzip.GzipFile) else stream  # compressed bytes read
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
    with _open(f) as stream:
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
            raise UftDataError(f"{f.display}: {f.unit} {start}", f"{what} ({_first_line(e)})",
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
        table, positions = _check_required(f, table, positions, required, rejects)
        if table.num_rows:
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            yield frame.with_columns(pl.Series(LINE, positions, dtype=pl.Int64))


def _tables(
    f: InputFile, schema: pa.Schema, required: Sequence[str], rejects: Rejects, progress: Progress | None
) -> Iterator[tuple[pa.Table, list[int] | range]]:
    if f.container == "parquet":
        for start, table in _parquet_batches(f, schema.names, progress):
            yield _cast_columns(f, table, schema), range(start, start + table.num_rows)
    elif f.container == "json":
        records = [(f.where(i), r) for i, r in enumerate(_json_array(f), start=1)]
        yield _records_to_table(records, schema, required, rejects)
    else:
        options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        for start, block in _jsonl_blocks(f, progress):
            table = _parse_block(block, options)
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
                yield _records_to_table([(w, r) for w, r in parsed if r is not None], schema, required, rejects)


def _parse_block(block: bytes, options: pa_json.ParseOptions) -> pa.Table | None:
    try:
        table = pa_json.read_json(
            io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=4 << 20), parse_options=options
        )
        table.validate(full=True)  # checks UTF-8, which the JSON parser does not
        return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _records_to_table(
    records: list[tuple[str, object]], schema: pa.Schema, required: Sequence[str], rejects: Rejects
) -> tuple[pa.Table, list[int]]:
    columns: dict[str, list] = {name: [] for name in schema.names}
    positions: list[int] = []
    for where, record in records:
        if not isinstance(record, dict):
            rejects.reject(RecordError(where, "", "is not a JSON object", got=type(record).__name__), record)
            continue
        if _conforms(where, record, schema, required, rejects):
            for name in schema.names:
                columns[name].append(record.get(name))
            positions.append(int(where.rsplit(" ", 1)[1]))
    arrays = [pa.array(columns[field.name], type=field.type) for field in schema]
    return pa.Table.from_arrays(arrays, schema=schema), positions


def _conforms(where: str, record: dict, schema: pa.Schema, required: Sequence[str], rejects: Rejects) -> bool:
    for field in schema:
        value = record.get(field.name)
        if value is None and field.name in required:
            rejects.reject(RecordError(where, field.name, "is missing or null"), record)
            return False
        if not _matches(value, field.type):
            rejects.reject(RecordError(where, field.name, "has the wrong type", got=value, expected=str(field.type)), record)
            return False
    return True


def _matches(value: object, t: pa.DataType) -> bool:
    """Whether a JSON value has Arrow type `t`, strictly: pyarrow itself would turn a string into a
    list of characters, or an int into a float, where the JSON parser of the fast path refuses."""
    if value is None:
        return True
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return isinstance(value, str)
    if pa.types.is_boolean(t):
        return isinstance(value, bool)
    if pa.types.is_integer(t):
        return isinstance(value, int) and not isinstance(value, bool)
    if pa.types.is_floating(t):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return isinstance(value, list) and all(_matches(v, t.value_type) for v in value)
    if pa.types.is_struct(t):
        return isinstance(value, dict) and all(_matches(value.get(f.name), f.type) for f in t)
    return True


def _cast_columns(f: InputFile, table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = []
    for field in schema:
        if field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        try:
            arrays.append(table[field.name].cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise UftDataError(
                f.name, f"column {field.name!r} has the wrong type", got=str(table.schema.field(field.name).type),
                expected=str(field.type),
            ) from None
    return pa.Table.from_arrays(arrays, schema=schema)


def _check_required(
    f: InputFile, table: pa.Table, positions: Sequence[int], required: Sequence[str], rejects: Rejects
) -> tuple[pa.Table, Sequence[int]]:
    if not any(table[name].null_count for name in required):
        return table, positions
    bad = pc.or_(*[table[n].is_null() for n in required]) if len(required) > 1 else table[required[0]].is_null()
    for i in pc.indices_nonzero(bad).to_pylist():
        missing = next(n for n in required if not table[n][i].is_valid)
        rejects.reject(RecordError(f.where(positions[i]), missing, "is missing or null"), table.slice(i, 1).to_pylist()[0])
    keep = pc.invert(bad)
    return table.filter(keep), [p for p, k in zip(positions, keep.to_pylist()) if k]
