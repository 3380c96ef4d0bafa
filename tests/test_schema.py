"""The row schema (docs/design.md, "Row schema"): `row_problems` flags every value rule, `schema_problems`
every column-level difference."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from uftdata import schema
from uftdata.ids import with_ids

USER = {"role": "user", "content": "How long should I boil pasta?"}
ASSISTANT = {"role": "assistant", "content": "Usually eight to ten minutes; taste it a minute early."}
ATTRS = [{"name": "coherence", "value": 4.0}, {"name": "helpfulness", "value": 3.0}]


def good_rows() -> pl.DataFrame:
    """One valid row of every kind; the pairwise rows form one pair."""
    base = {"prompt": [USER], "completion": [ASSISTANT], "source": "test", "turn": 0, "attributes": None}
    rows = [
        {**base, "score": 1.0, "kind": "sft", "label": None, "pair_id": None, "source_id": "a#0"},
        {**base, "score": 0.75, "kind": "score", "label": None, "pair_id": None, "source_id": "b:1",
         "attributes": ATTRS},
        {**base, "score": 0.0, "kind": "binary", "label": False, "pair_id": None, "source_id": "c:1"},
        {**base, "score": 1.0, "kind": "pairwise", "label": True, "pair_id": "p" * 32, "source_id": "d:1"},
        {**base, "score": 0.0, "kind": "pairwise", "label": False, "pair_id": "p" * 32, "source_id": "d:1",
         "completion": [{"role": "assistant", "content": "Boil it for an hour."}]},
        {"prompt": [{"role": "system", "content": "Be brief."}, USER, ASSISTANT, {"role": "user", "content": "And rice?"}],
         "completion": [{"role": "assistant", "content": "About 18 minutes."}], "score": 1.0, "kind": "sft",
         "label": None, "pair_id": None, "source": "test", "source_id": "e#1", "turn": 1, "attributes": None},
    ]
    without_ids = {k: v for k, v in schema.POLARS_SCHEMA.items() if k not in ("id", "group")}
    frame = with_ids(pl.DataFrame(rows, schema=without_ids, orient="row"))
    return frame.select(schema.COLUMNS)


def problems_of(frame: pl.DataFrame) -> list[tuple[int, str]]:
    return [(row, field) for row, field, _ in schema.row_problems(frame).iter_rows()]


def test_good_rows_have_no_problems() -> None:
    frame = good_rows()
    assert frame.schema == pl.Schema(schema.POLARS_SCHEMA)
    problems = schema.row_problems(frame)
    assert problems.height == 0
    assert problems.columns == ["row", "field", "problem"]


def test_good_rows_round_trip_the_arrow_schema() -> None:
    table = schema.to_arrow(good_rows())
    assert table.schema.equals(schema.SCHEMA)
    assert schema.schema_problems(table.schema) == []
    back = pl.from_arrow(table)
    assert isinstance(back, pl.DataFrame)
    assert_frame_equal(back, good_rows())


NEW_PROMPT_USER = pl.lit([{"role": "user", "content": "x"}], dtype=schema.POLARS_MESSAGES)

# (expected field, change to the sft row 0 that breaks exactly that rule)
BAD: dict[str, tuple[str | tuple[str, ...], dict[str, pl.Expr]]] = {
    "id_null": ("id", {"id": pl.lit(None, dtype=pl.String)}),
    "id_short": ("id", {"id": pl.lit("abc123")}),
    "id_upper": ("id", {"id": pl.col("id").str.to_uppercase()}),
    "prompt_empty": ("prompt", {"prompt": pl.lit([], dtype=schema.POLARS_MESSAGES)}),
    "prompt_ends_with_assistant": ("prompt", {"prompt": pl.lit([USER, ASSISTANT], dtype=schema.POLARS_MESSAGES),
                                              "turn": pl.lit(1, dtype=pl.Int32)}),
    "prompt_unknown_role": ("prompt", {"prompt": pl.lit([{"role": "tool", "content": "x"}, USER],
                                                        dtype=schema.POLARS_MESSAGES)}),
    "completion_two_messages": ("completion", {"completion": pl.lit([ASSISTANT, ASSISTANT],
                                                                    dtype=schema.POLARS_MESSAGES)}),
    "completion_user": ("completion", {"completion": pl.lit([USER], dtype=schema.POLARS_MESSAGES)}),
    "completion_empty": ("completion", {"completion": pl.lit([], dtype=schema.POLARS_MESSAGES)}),
    "score_above": ("score", {"kind": pl.lit("score"), "score": pl.lit(1.5, dtype=pl.Float32)}),
    "score_below": ("score", {"kind": pl.lit("score"), "score": pl.lit(-0.01, dtype=pl.Float32)}),
    "score_nan": ("score", {"kind": pl.lit("score"), "score": pl.lit(float("nan"), dtype=pl.Float32)}),
    "score_null": ("score", {"kind": pl.lit("score"), "score": pl.lit(None, dtype=pl.Float32)}),
    "sft_score_not_one": ("score", {"score": pl.lit(0.5, dtype=pl.Float32)}),  # UFT Eq. 7
    # an unknown kind is neither sft/score (label must be null) nor binary/pairwise (label must be set)
    "kind_unknown": (("kind", "label"), {"kind": pl.lit("dpo")}),
    "label_on_sft": ("label", {"label": pl.lit(True)}),
    "pair_id_on_sft": ("pair_id", {"pair_id": pl.lit("p" * 32)}),
    "source_empty": ("source", {"source": pl.lit("")}),
    "source_null": ("source", {"source": pl.lit(None, dtype=pl.String)}),
    "source_id_null": ("source_id", {"source_id": pl.lit(None, dtype=pl.String)}),
    "group_null": ("group", {"group": pl.lit(None, dtype=pl.String)}),
    "group_not_hex": ("group", {"group": pl.lit("g" * 32)}),
    "turn_wrong": ("turn", {"turn": pl.lit(2, dtype=pl.Int32)}),
    "turn_null": ("turn", {"turn": pl.lit(None, dtype=pl.Int32)}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_row_problems_flag_each_rule(case: str) -> None:
    fields, change = BAD[case]
    frame = good_rows()
    bad = frame.head(1).with_columns(**change)
    expected = [fields] if isinstance(fields, str) else list(fields)
    assert problems_of(pl.concat([frame, bad])) == [(frame.height, field) for field in expected]


@pytest.mark.parametrize(
    ("row", "change", "field"),
    [
        (2, {"label": pl.lit(None, dtype=pl.Boolean)}, "label"),  # binary without label
        (3, {"label": pl.lit(None, dtype=pl.Boolean)}, "label"),  # pairwise without label
        (1, {"label": pl.lit(False)}, "label"),  # score row with a label
        (3, {"pair_id": pl.lit(None, dtype=pl.String)}, "pair_id"),  # pairwise without pair_id
        (2, {"pair_id": pl.lit("p" * 32)}, "pair_id"),  # binary with pair_id
    ],
)
def test_row_problems_label_and_pair_id_by_kind(row: int, change: dict[str, pl.Expr], field: str) -> None:
    frame = good_rows()
    bad = frame.slice(row, 1).with_columns(**change)
    assert problems_of(pl.concat([frame, bad])) == [(frame.height, field)]


def test_row_problems_lists_every_problem_of_a_row() -> None:
    bad = good_rows().head(1).with_columns(score=pl.lit(2.0, dtype=pl.Float32), kind=pl.lit("sft "),
                                           source_id=pl.lit(None, dtype=pl.String))
    assert problems_of(bad) == [(0, "kind"), (0, "label"), (0, "score"), (0, "source_id")]


def test_row_problems_messages_name_the_rule() -> None:
    bad = good_rows().head(1).with_columns(score=pl.lit(1.5, dtype=pl.Float32))
    assert schema.row_problems(bad)["problem"].to_list() == [
        "is null, NaN or outside [0, 1]", "must be 1 on sft rows (instruction data is feedback with score 1)"]


def test_pair_problems() -> None:
    pairs = pl.DataFrame({"pair_id": ["a", "a", "b", "b", "c"], "label": [True, False, True, True, True]})
    assert schema.pair_problems(pairs).to_dicts() == [
        {"pair_id": "b", "problem": "has 2 rows with 2 chosen; expected 2 rows, 1 chosen"},
        {"pair_id": "c", "problem": "has 1 rows with 1 chosen; expected 2 rows, 1 chosen"},
    ]


def test_schema_problems_compatible_variants() -> None:
    assert schema.schema_problems(schema.SCHEMA) == []
    # what polars writes: large_string / large_list; still the same values
    assert schema.schema_problems(pl.DataFrame(schema=schema.POLARS_SCHEMA).to_arrow().schema) == []


def test_schema_problems_missing_column() -> None:
    table_schema = schema.SCHEMA.remove(schema.SCHEMA.get_field_index("group"))
    assert schema.schema_problems(table_schema) == ["column 'group' is missing"]


def test_schema_problems_wrong_type() -> None:
    i = schema.SCHEMA.get_field_index("score")
    wrong = schema.SCHEMA.set(i, pa.field("score", pa.float64()))
    i = wrong.get_field_index("prompt")
    wrong = wrong.set(i, pa.field("prompt", pa.list_(pa.string())))
    assert schema.schema_problems(wrong) == [
        "column 'prompt' has type list<item: string>; expected list<item: struct<role: string, content: string>>",
        "column 'score' has type double; expected float",
    ]


def test_schema_problems_ignores_extra_columns() -> None:
    assert schema.schema_problems(schema.SCHEMA.append(pa.field("extra", pa.int8()))) == []


def test_empty_frame_is_in_the_schema() -> None:
    empty = schema.empty_frame()
    assert empty.height == 0
    assert schema.to_arrow(empty).schema.equals(schema.SCHEMA)
