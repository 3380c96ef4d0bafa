"""Records against a layout's Arrow schema, for `reader.iter_frames`: a JSONL block parsed by pyarrow
in one go, and the slow path that names the exact line and field when that fails. Both reject a
record missing a required field, or holding a value of another type, under its position."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from uftdata.errors import RecordError, UftDataError
from uftdata.inputs import InputFile
from uftdata.rejects import Rejects


def parse_block(block: bytes, options: pa_json.ParseOptions) -> pa.Table | None:
    """The block's records as one table, or None when any line is not valid (JSON, UTF-8, types)."""
    try:
        table = pa_json.read_json(
            io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=4 << 20), parse_options=options
        )
        table.validate(full=True)  # checks UTF-8, which the JSON parser does not
        return table
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def records_to_table(
    records: list[tuple[str, object]], schema: pa.Schema, required: Sequence[str], rejects: Rejects
) -> tuple[pa.Table, list[int]]:
    """The conforming records as a table, and the position of each (the number ending `where`)."""
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


def cast_columns(f: InputFile, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A Parquet batch with `schema`'s columns and types (absent columns all null); a column of
    another type stops the command, naming it."""
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


def check_required(
    f: InputFile, table: pa.Table, positions: Sequence[int], required: Sequence[str], rejects: Rejects
) -> tuple[pa.Table, Sequence[int]]:
    """The rows whose required fields are all present, and their positions; the others rejected."""
    if not any(table[name].null_count for name in required):
        return table, positions
    bad = pc.or_(*[table[n].is_null() for n in required]) if len(required) > 1 else table[required[0]].is_null()
    for i in pc.indices_nonzero(bad).to_pylist():
        missing = next(n for n in required if not table[n][i].is_valid)
        rejects.reject(RecordError(f.where(positions[i]), missing, "is missing or null"), table.slice(i, 1).to_pylist()[0])
    keep = pc.invert(bad)
    return table.filter(keep), [p for p, k in zip(positions, keep.to_pylist()) if k]
