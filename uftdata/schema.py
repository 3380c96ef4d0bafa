"""The row schema every `uftdata` command writes and `uft-train` reads (docs/design.md, "Row schema").

Defined once here; `validate_frame` is the single place that decides whether a frame is in it.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

import polars as pl
import pyarrow as pa

Kind = Literal["sft", "score", "binary", "pairwise"]
Role = Literal["system", "user", "assistant"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
ROLES: Final[tuple[str, ...]] = get_args(Role)

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
ATTRIBUTE = pa.struct([("name", pa.string()), ("value", pa.float32())])

SCHEMA: Final[pa.Schema] = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt", pa.list_(MESSAGE), nullable=False),
        pa.field("completion", pa.list_(MESSAGE), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("label", pa.bool_()),
        pa.field("pair_id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("turn", pa.int32(), nullable=False),
        pa.field("attributes", pa.list_(ATTRIBUTE)),
    ]
)
COLUMNS: Final[tuple[str, ...]] = tuple(SCHEMA.names)

POLARS_MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
POLARS_SCHEMA: Final[dict[str, pl.DataType]] = {
    "id": pl.String(),
    "prompt": POLARS_MESSAGES,
    "completion": POLARS_MESSAGES,
    "score": pl.Float32(),
    "kind": pl.String(),
    "label": pl.Boolean(),
    "pair_id": pl.String(),
    "source": pl.String(),
    "source_id": pl.String(),
    "group": pl.String(),
    "turn": pl.Int32(),
    "attributes": pl.List(pl.Struct({"name": pl.String, "value": pl.Float32})),
}


def to_arrow(frame: pl.DataFrame) -> pa.Table:
    """The frame's schema columns, in schema order and types, as an Arrow table."""
    table = frame.select(COLUMNS).to_arrow()
    # polars exports large_string / large_list; the file schema uses the 32-bit offset types.
    return table.cast(SCHEMA)


def empty_frame() -> pl.DataFrame:
    return pl.DataFrame(schema=POLARS_SCHEMA)


def schema_problems(schema: pa.Schema) -> list[str]:
    """Column-level differences between `schema` and SCHEMA, one message each (empty: compatible)."""
    problems = []
    for field in SCHEMA:
        if field.name not in schema.names:
            problems.append(f"column {field.name!r} is missing")
            continue
        got = schema.field(field.name).type
        if not _same_type(got, field.type):
            problems.append(f"column {field.name!r} has type {got}; expected {field.type}")
    return problems


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    # Large and small offsets, view types and list item names hold the same values.
    return _normalize(got) == _normalize(want)


def _normalize(t: pa.DataType) -> str:
    text = str(t)
    for large, small in (("large_string", "string"), ("large_list", "list"), ("string_view", "string")):
        text = text.replace(large, small)
    return text.replace("element: ", "item: ")


def row_problems(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per problem found in `frame` (already in the schema's types): `row`, `field`, `problem`.

    Checks the value rules of docs/design.md's schema table; pair rules (two rows per `pair_id`, one
    chosen, one rejected) are checked by `pair_problems`.
    """
    n_assistant = pl.col("prompt").list.eval(pl.element().struct.field("role") == "assistant").list.sum()
    last_role = pl.col("prompt").list.last().struct.field("role")
    checks: list[tuple[str, str, pl.Expr]] = [
        ("id", "is null or not 32 hex characters", ~pl.col("id").str.contains(r"^[0-9a-f]{32}$").fill_null(False)),
        ("prompt", "is empty or does not end with a user message", (last_role != "user").fill_null(True)),
        (
            "prompt",
            f"has a role outside {ROLES}",
            ~pl.col("prompt").list.eval(pl.element().struct.field("role").is_in(ROLES)).list.all().fill_null(False),
        ),
        (
            "completion",
            "is not exactly one assistant message",
            ~(
                (pl.col("completion").list.len() == 1)
                & (pl.col("completion").list.first().struct.field("role") == "assistant")
            ).fill_null(False),
        ),
        *_target_checks(),
        ("source", "is null or empty", (pl.col("source").str.len_bytes() == 0).fill_null(True)),
        ("source_id", "is null", pl.col("source_id").is_null()),
        ("group", "is null or not 32 hex characters", ~pl.col("group").str.contains(r"^[0-9a-f]{32}$").fill_null(False)),
        ("turn", "does not equal the number of assistant messages in prompt", (pl.col("turn") != n_assistant).fill_null(True)),
    ]
    return _problems(frame, checks)


def target_problems(frame: pl.DataFrame) -> pl.DataFrame:
    """`row_problems` limited to what a loss reads as its target: `score`, `kind`, `label` and
    `pair_id` (the only columns `frame` needs). uft-train checks these on every row it reads, a
    verified mixture too: its manifest proves the rows are the ones mixed, not that the uftdata that
    mixed them knew today's rules (sft rows score 1 is newer than the first mixtures)."""
    return _problems(frame, _target_checks())


def _target_checks() -> list[tuple[str, str, pl.Expr]]:
    return [
        ("score", "is null, NaN or outside [0, 1]", ~pl.col("score").is_between(0.0, 1.0).fill_null(False)),
        # UFT Eq. 7: instruction data is feedback with score 1; una_* train sft rows toward their score.
        ("score", "must be 1 on sft rows (instruction data is feedback with score 1)",
         ((pl.col("kind") == "sft") & (pl.col("score") != 1.0)).fill_null(False)),
        ("kind", f"is not one of {KINDS}", ~pl.col("kind").is_in(KINDS).fill_null(False)),
        (
            "label",
            "must be null for sft and score rows and set for binary and pairwise rows",
            pl.col("label").is_null() != pl.col("kind").is_in(["sft", "score"]),
        ),
        (
            "pair_id",
            "must be set exactly on pairwise rows",
            pl.col("pair_id").is_null() == (pl.col("kind") == "pairwise"),
        ),
    ]


def _problems(frame: pl.DataFrame, checks: list[tuple[str, str, pl.Expr]]) -> pl.DataFrame:
    indexed = frame.with_row_index("row")
    parts = [
        indexed.filter(bad).select("row", pl.lit(field).alias("field"), pl.lit(what).alias("problem"))
        for field, what, bad in checks
    ]
    return pl.concat(parts).sort("row", "field", maintain_order=True)


def pair_problems(pairs: pl.DataFrame) -> pl.DataFrame:
    """Problems with pairwise rows given as columns `pair_id`, `label`: one row per bad `pair_id`."""
    return (
        pairs.group_by("pair_id")
        .agg(n=pl.len(), chosen=pl.col("label").sum())
        .filter((pl.col("n") != 2) | (pl.col("chosen") != 1))
        .sort("pair_id")
        .select("pair_id", problem=pl.format("has {} rows with {} chosen; expected 2 rows, 1 chosen", "n", "chosen"))
    )
