"""`uftdata score`: the formulas against hand computations, each layout's adapter, the CLI end to end,
and conformance over the real HelpSteer / HelpSteer2 samples."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import xxhash
from typer.testing import CliRunner

from uftdata.cli import app
from uftdata.errors import RecordError, UftDataError
from uftdata.fields import rescale, source_id_from
from uftdata.layouts import BY_NAME
from uftdata.rows import Drop, build_rows
from uftdata.schema import SCHEMA
from uftdata.score import (
    HELPSTEER2_WEIGHTS,
    ScoreOptions,
    adapter_for,
    check_weights,
    to_unit,
    weighted_range,
    weighted_score,
)

HS2 = ScoreOptions(weights=HELPSTEER2_WEIGHTS)
WHERE = "hs.jsonl: line 3"


def hs_record(h: object = 3, c: object = 4, coh: object = 2, **extra: object) -> dict:
    return {"prompt": "Say hi.", "response": "Hi!", "helpfulness": h, "correctness": c, "coherence": coh,
            "complexity": 1, "verbosity": 0, **extra}


def adapt(layout: str, record: dict, options: ScoreOptions = HS2, notes: Counter[str] | None = None) -> list[dict]:
    return adapter_for(BY_NAME[layout], options)(record, WHERE, Counter() if notes is None else notes)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def run_cli(*args: str) -> tuple[list[dict], dict, str]:
    """Run `uftdata score ARGS` in-process; (rows, summary from the file footer, stdout)."""
    result = CliRunner().invoke(app, ["score", *args, "--quiet"])
    if result.exception is not None:
        raise result.exception
    out = Path(args[args.index("-o") + 1])
    table = pq.read_table(out)
    assert table.schema.equals(SCHEMA)
    summary = json.loads(pq.read_metadata(out).metadata[b"uft.summary"])
    return table.to_pylist(), summary, result.stdout


# ---------------------------------------------------------------------------------------------
# Pure functions


@pytest.mark.parametrize(("where", "expected"), [
    ("helpsteer2.jsonl: line 3", "helpsteer2.jsonl:3"),
    ("x.json: record 2", "x.json:2"),
    ("x.parquet: row 0", "x.parquet:0"),
])
def test_source_id_from(where: str, expected: str) -> None:
    assert source_id_from(where) == expected


def test_weighted_score_by_hand() -> None:
    """h=3, c=4, coh=2: (0.65*3 + 0.8*4 + 0.45*2) / (0.65+0.8+0.45)*4 = 6.05 / 7.6."""
    ratings = {"helpfulness": 3, "correctness": 4, "coherence": 2}
    assert weighted_range(HELPSTEER2_WEIGHTS, (0, 4)) == pytest.approx((0.0, 7.6), rel=1e-15)
    assert weighted_score(ratings, HELPSTEER2_WEIGHTS, (0, 4)) == pytest.approx(6.05 / 7.6, rel=1e-15)


def test_negative_weight_takes_its_min_at_the_range_max() -> None:
    """w = {h: 1, v: -0.5} on 0-4: lo = 1*0 + -0.5*4 = -2, hi = 1*4 + -0.5*0 = 4.
    h=2, v=4: (2 - 2 + 2) / 6 = 1/3; h=4, v=0 is the best (1); h=0, v=4 the worst (0)."""
    weights = {"helpfulness": 1.0, "verbosity": -0.5}
    assert weighted_range(weights, (0, 4)) == (-2.0, 4.0)
    assert weighted_score({"helpfulness": 2, "verbosity": 4}, weights, (0, 4)) == pytest.approx(1 / 3)
    assert weighted_score({"helpfulness": 4, "verbosity": 0}, weights, (0, 4)) == 1.0
    assert weighted_score({"helpfulness": 0, "verbosity": 4}, weights, (0, 4)) == 0.0


def test_rescale() -> None:
    assert rescale(5.5, 1, 10) == 0.5
    assert rescale(1, 1, 5) == 0.0


def test_to_unit_snaps_rounding_and_rejects_the_rest() -> None:
    assert to_unit(0.5, WHERE, "score") == 0.5
    assert to_unit(1.0000000000000002, WHERE, "score") == 1.0  # 4/4/4 divided by a literal 7.6
    assert to_unit(-1e-12, WHERE, "score") == 0.0
    for bad in (1.001, -0.001, float("nan")):
        with pytest.raises(RecordError, match="outside"):
            to_unit(bad, WHERE, "score")


def test_check_weights() -> None:
    check_weights({"helpfulness": -1.0}, (0, 4))
    for bad in ({}, {"helpfulness": 0.0}, {"helpfulness": float("nan")}):
        with pytest.raises(UftDataError, match="--weight"):
            check_weights(bad, (0, 4))


# ---------------------------------------------------------------------------------------------
# helpsteer2 and helpsteer2_disagreements


def test_helpsteer2_row() -> None:
    (row,) = adapt("helpsteer2", hs_record())
    assert row["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert row["completion"] == {"role": "assistant", "content": "Hi!"}
    assert row["score"] == pytest.approx(6.05 / 7.6, rel=1e-15)
    assert (row["kind"], row["label"], row["pair"], row["source_id"]) == ("score", None, None, "hs.jsonl:3")
    assert row["attributes"] == [{"name": "coherence", "value": 2.0}, {"name": "complexity", "value": 1.0},
                                 {"name": "correctness", "value": 4.0}, {"name": "helpfulness", "value": 3.0},
                                 {"name": "verbosity", "value": 0.0}]


def test_all_fours_score_exactly_one() -> None:
    (row,) = adapt("helpsteer2", hs_record(4, 4, 4))
    assert row["score"] == 1.0
    assert adapt("helpsteer2", hs_record(0, 0, 0))[0]["score"] == 0.0


@pytest.mark.parametrize(("record", "field", "what"), [
    (hs_record(h=5), "helpfulness", "outside the rating range"),
    (hs_record(c=-1), "correctness", "outside the rating range"),
    (hs_record(coh="4"), "coherence", "not a number"),
    (hs_record(h=True), "helpfulness", "not a number"),
    (hs_record(verbosity=None), "verbosity", "not a number"),
    ({k: v for k, v in hs_record().items() if k != "coherence"}, "coherence", "missing"),
    (hs_record(response=None), "response", "not a string"),
])
def test_helpsteer2_bad_fields_name_the_field(record: dict, field: str, what: str) -> None:
    with pytest.raises(RecordError, match=what) as error:
        adapt("helpsteer2", record)
    assert error.value.field == field
    assert error.value.line().startswith(f"{WHERE}: field {field!r}")


def test_multi_turn_prompt_in_the_helpsteer2_format() -> None:
    # HelpSteer2 joins earlier turns inside `prompt`; the response answers the last user turn.
    prompt = "What is 2+2?\n<extra_id_1>Assistant\n4.\n<extra_id_1>User\nAnd 3+3?\nShow the sum."
    (row,) = adapt("helpsteer2", hs_record(prompt=prompt, response="6."))
    assert row["prompt"] == [{"role": "user", "content": "What is 2+2?"},
                             {"role": "assistant", "content": "4."},
                             {"role": "user", "content": "And 3+3?\nShow the sum."}]
    assert build_rows([row], source="helpsteer2")["turn"].to_list() == [1]


def test_prompt_ending_with_an_assistant_turn_is_an_error() -> None:
    with pytest.raises(RecordError, match="does not end with a user message"):
        adapt("helpsteer2", hs_record(prompt="Hi\n<extra_id_1>Assistant\nHello"))


def test_empty_response_is_dropped() -> None:
    with pytest.raises(Drop) as drop:
        adapt("helpsteer2", hs_record(response=" \n"))
    assert drop.value.reason == "empty_completion"


def test_custom_weight_on_a_missing_attribute_names_it() -> None:
    with pytest.raises(RecordError, match="has a weight") as error:
        adapt("helpsteer2", hs_record(), ScoreOptions(weights={"harmlessness": 1.0}))
    assert error.value.field == "harmlessness"


def test_disagreements_average_each_list() -> None:
    """Means h=3.5, c=4, coh=2: (0.65*3.5 + 0.8*4 + 0.45*2) / 7.6 = 6.375 / 7.6."""
    record = hs_record([3, 4], [4, 4, 4], [2], complexity=[1, 2], verbosity=[0, 1, 2, 3])
    (row,) = adapt("helpsteer2_disagreements", record)
    assert row["score"] == pytest.approx(6.375 / 7.6, rel=1e-15)
    assert {a["name"]: a["value"] for a in row["attributes"]} == {
        "coherence": 2.0, "complexity": 1.5, "correctness": 4.0, "helpfulness": 3.5, "verbosity": 1.5}


@pytest.mark.parametrize(("h", "field"), [([], "helpfulness"), ([3, 9], "helpfulness[1]"), (3, "helpfulness")])
def test_disagreements_bad_lists(h: object, field: str) -> None:
    with pytest.raises(RecordError) as error:
        adapt("helpsteer2_disagreements", hs_record(h, [4], [2], complexity=[1], verbosity=[0]))
    assert error.value.field == field


# ---------------------------------------------------------------------------------------------
# ultrafeedback and columns


def uf_record(*scores: object) -> dict:
    return {"instruction": "Name a colour.", "completions": [
        {"model": f"m{i}", "response": f"Colour {i}", "overall_score": s, "fine-grained_score": 3, "annotations": {}}
        for i, s in enumerate(scores)]}


def test_ultrafeedback_one_row_per_rated_completion() -> None:
    """overall 10 -> (10-1)/9 = 1; "N/A" skipped; 5.5 -> 4.5/9 = 0.5."""
    notes: Counter[str] = Counter()
    rows = adapt("ultrafeedback", uf_record(10, "N/A", 5.5), notes=notes)
    assert [(r["source_id"], r["score"]) for r in rows] == [("hs.jsonl:3#0", 1.0), ("hs.jsonl:3#2", 0.5)]
    assert rows[1]["attributes"] == [{"name": "overall_score", "value": 5.5}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "Name a colour."}]
    assert notes == Counter(missing_rating=1)


def test_ultrafeedback_fine_grained() -> None:
    """fine-grained 3 -> (3-1)/4 = 0.5."""
    (row,) = adapt("ultrafeedback", uf_record(None), ScoreOptions(HELPSTEER2_WEIGHTS, ultrafeedback_rating="fine-grained"))
    assert (row["score"], row["attributes"]) == (0.5, [{"name": "fine-grained_score", "value": 3.0}])


def test_ultrafeedback_without_any_rating_is_dropped() -> None:
    notes: Counter[str] = Counter()
    with pytest.raises(Drop) as drop:
        adapt("ultrafeedback", uf_record("N/A", None), notes=notes)
    assert drop.value.reason == "missing_rating" and not notes


def test_ultrafeedback_empty_completion_is_skipped_and_noted() -> None:
    record = uf_record(10, 4)
    record["completions"][0]["response"] = " "
    notes: Counter[str] = Counter()
    assert [r["source_id"] for r in adapt("ultrafeedback", record, notes=notes)] == ["hs.jsonl:3#1"]
    assert notes == Counter(empty_completion=1)


def test_ultrafeedback_rating_out_of_range() -> None:
    with pytest.raises(RecordError) as error:
        adapt("ultrafeedback", uf_record(7, 11))
    assert error.value.field == "completions[1].overall_score"


COLUMNS = ScoreOptions(HELPSTEER2_WEIGHTS, score_column="rating", scale=(1.0, 10.0))


@pytest.mark.parametrize(("prompt", "response"), [
    ("Q?", "A."),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}], {"role": "assistant", "content": "A."}),
    ("Q?", [{"role": "assistant", "content": "A."}]),
])
def test_columns_layout(prompt: object, response: object) -> None:
    """rating 7 on 1:10 -> (7-1)/9 = 2/3."""
    (row,) = adapt("columns", {"prompt": prompt, "response": response, "rating": 7}, COLUMNS)
    assert row["score"] == pytest.approx(2 / 3)
    assert row["prompt"][-1] == {"role": "user", "content": "Q?"}
    assert row["completion"] == {"role": "assistant", "content": "A."}
    assert row["attributes"] == [{"name": "rating", "value": 7.0}]


@pytest.mark.parametrize(("record", "field"), [
    ({"prompt": "Q?", "response": "A.", "rating": 10.5}, "rating"),
    ({"prompt": "Q?", "response": "A.", "rating": 0}, "rating"),
    ({"prompt": [{"role": "assistant", "content": "Q?"}], "response": "A.", "rating": 5}, "prompt"),
    ({"prompt": "Q?", "response": [{"role": "user", "content": "A."}], "rating": 5}, "response"),
    ({"prompt": "Q?", "rating": 5}, "response"),
])
def test_columns_errors_name_the_column(record: dict, field: str) -> None:
    with pytest.raises(RecordError) as error:
        adapt("columns", record, COLUMNS)
    assert error.value.field == field


def test_columns_missing_rating_is_dropped() -> None:
    with pytest.raises(Drop) as drop:
        adapt("columns", {"prompt": "Q?", "response": "A.", "rating": None}, COLUMNS)
    assert drop.value.reason == "missing_rating"


def test_adapter_for_checks_its_options() -> None:
    with pytest.raises(UftDataError, match="--score-column"):
        adapter_for(BY_NAME["columns"], HS2)
    with pytest.raises(UftDataError, match="--ultrafeedback-rating"):
        adapter_for(BY_NAME["ultrafeedback"], ScoreOptions(HELPSTEER2_WEIGHTS, ultrafeedback_rating="mean"))
    with pytest.raises(UftDataError, match="not a layout"):
        adapter_for(BY_NAME["ultrachat"], HS2)


# ---------------------------------------------------------------------------------------------
# End to end through the CLI


def canonical_id(prompt: list[dict], completion: list[dict]) -> str:
    """docs/design.md, "Ids", recomputed with the `xxhash` library."""
    text = "".join(m["role"] + "\x1f" + m["content"] + "\x1e" for m in prompt) + "\x1d" + "".join(
        m["role"] + "\x1f" + m["content"] + "\x1e" for m in completion)
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def test_cli_helpsteer2(tmp_path: Path) -> None:
    records = [hs_record(), hs_record(4, 4, 4, response="Hello!"), hs_record(response="")]
    src = write_jsonl(tmp_path / "hs2.jsonl", records)
    rows, summary, stdout = run_cli(str(src), "-o", str(tmp_path / "out.parquet"))
    assert [r["score"] for r in rows] == [pytest.approx(6.05 / 7.6, rel=1e-7), 1.0]
    assert {r["kind"] for r in rows} == {"score"} and {r["source"] for r in rows} == {"hs2"}
    assert [r["source_id"] for r in rows] == ["hs2.jsonl:1", "hs2.jsonl:2"]
    for r in rows:
        assert r["id"] == canonical_id(r["prompt"], r["completion"])
        assert len(r["group"]) == 32 and r["label"] is None and r["pair_id"] is None and r["turn"] == 0
    assert summary["records_in"] == 3 and summary["records_used"] == 2 and summary["rows_out"] == 2
    assert summary["dropped"] == {"empty_completion": 1}
    assert "3 records in, 2 used, 1 dropped" in stdout


def test_cli_ultrafeedback_and_columns(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "uf.jsonl", [uf_record(10, "N/A", 1), uf_record("N/A")])
    rows, summary, stdout = run_cli(str(src), "-o", str(tmp_path / "uf.parquet"))
    assert [(r["source_id"], r["score"]) for r in rows] == [("uf.jsonl:1#0", 1.0), ("uf.jsonl:1#2", 0.0)]
    assert (summary["records_in"], summary["records_used"], summary["dropped"]) == (2, 1, {"missing_rating": 1})
    assert summary["notes"] == {"missing_rating": 1} and "notes.missing_rating: 1" in stdout

    src = write_jsonl(tmp_path / "generic.jsonl", [{"prompt": "Q?", "response": "A.", "stars": 4}])
    rows, summary, _ = run_cli(str(src), "-o", str(tmp_path / "g.parquet"), "--score-column", "stars", "--scale", "1:5")
    assert [r["score"] for r in rows] == [0.75] and summary["inputs"][0]["layout"] == "columns"


def test_cli_columns_with_renamed_columns(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "generic.jsonl", [{"question": "Q?", "answer": "A.", "stars": 4}])
    rows, _, _ = run_cli(str(src), "-o", str(tmp_path / "g.parquet"), "--score-column", "stars", "--scale", "1:5",
                         "--prompt-column", "question", "--response-column", "answer")
    assert [r["score"] for r in rows] == [0.75]


def test_cli_out_of_range_names_file_line_and_field(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", [hs_record(), hs_record(h=5)])
    with pytest.raises(RecordError, match=r"^bad\.jsonl: line 2: field 'helpfulness': is outside the rating range"):
        run_cli(str(src), "-o", str(tmp_path / "out.parquet"))
    assert not (tmp_path / "out.parquet").exists()

    rows, summary, _ = run_cli(str(src), "-o", str(tmp_path / "out.parquet"), "--on-error", "skip")
    assert len(rows) == 1 and summary["dropped"] == {"invalid_record": 1} and summary["records_in"] == 2
    (reject,) = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert (reject["where"], reject["field"]) == ("bad.jsonl: line 2", "helpfulness")


# ---------------------------------------------------------------------------------------------
# Conformance over the real samples


@pytest.mark.parametrize(("name", "n"), [("helpsteer2_sample10.jsonl", 10), ("helpsteer_v1_train.jsonl", 200)])
def test_real_helpsteer_samples(samples_dir: Path, tmp_path: Path, name: str, n: int) -> None:
    raw = [json.loads(line) for line in (samples_dir / name).read_text(encoding="utf-8").splitlines()]
    rows, summary, _ = run_cli(str(samples_dir / name), "-o", str(tmp_path / "out.parquet"))
    assert len(raw) == len(rows) == summary["records_used"] == summary["records_in"] == n
    for line, (record, row) in enumerate(zip(raw, rows, strict=True), start=1):
        # docs/design.md: (0.65 h + 0.8 c + 0.45 coh) / 7.6, compared after the float32 cast
        expected = (0.65 * record["helpfulness"] + 0.8 * record["correctness"] + 0.45 * record["coherence"]) / 7.6
        assert row["score"] == pytest.approx(expected, abs=1e-7), line
        assert row["source_id"] == f"{name}:{line}"
        assert row["prompt"] == [{"role": "user", "content": record["prompt"]}]
        assert row["completion"] == [{"role": "assistant", "content": record["response"]}]
        assert {a["name"]: a["value"] for a in row["attributes"]} == {
            k: record[k] for k in ("coherence", "complexity", "correctness", "helpfulness", "verbosity")}
