"""`uftdata feedback --pairs-from-scores`: hand-written score files -> pairs, every row accounted;
schema errors; the CLI end to end; and the real HelpSteer v1 sample through `score` then `feedback`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from conftest import UFTDATA

from uftdata.accounting import Summary
from uftdata.errors import UftDataError
from uftdata.pairs import pairs_from_scores
from uftdata.reader import expand_inputs
from uftdata.rejects import Rejects
from uftdata.rows import build_rows
from uftdata.schema import SCHEMA, pair_problems, row_problems
from uftdata.writer import open_rows

ONE_TURN = [{"role": "user", "content": "Q1"}]
# Opens like ONE_TURN (same `group`) but is another prompt: its responses pair among themselves.
TWO_TURNS = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "more"}]


def score_row(prompt: list[dict], text: str, score: float, kind: str = "score", line: int = 0) -> dict:
    return {"prompt": prompt, "completion": {"role": "assistant", "content": text}, "score": score, "kind": kind,
            "label": None, "pair": None, "source_id": f"s.jsonl:{line}",
            "attributes": [{"name": "helpfulness", "value": score * 4}]}


ROWS = [
    score_row(ONE_TURN, "a", 0.75), score_row(ONE_TURN, "b", 0.5), score_row(ONE_TURN, "c", 0.25),  # pair + 1
    score_row(TWO_TURNS, "d", 0.25), score_row(TWO_TURNS, "e", 1.0),                                 # pair
    score_row([{"role": "user", "content": "Q3"}], "f", 0.5),                                        # single
    score_row([{"role": "user", "content": "Q4"}], "g", 0.5), score_row([{"role": "user", "content": "Q4"}], "h", 0.5),
    score_row([{"role": "user", "content": "Q5"}], "i", 1.0), score_row([{"role": "user", "content": "Q5"}], "j", 1.0),
    score_row([{"role": "user", "content": "Q5"}], "k", 0.0),  # tied top: one chosen, one not_extreme
    score_row([{"role": "user", "content": "Q6"}], "m", 0.75), score_row([{"role": "user", "content": "Q6"}], "m", 0.0),
    score_row([{"role": "user", "content": "Q7"}], "n", 1.0, kind="sft"),
]


def write_rows(path: Path, rows: list[dict], source: str = "hs") -> Path:
    frame = build_rows(rows, source=source)
    with open_rows(path) as writer:
        writer.write(frame)
    return path


def pair_up(*paths: Path, source: str | None = None) -> tuple[pl.DataFrame, Summary]:
    summary = Summary("feedback")
    frames = list(pairs_from_scores(expand_inputs(list(paths)), source=source, rejects=Rejects(), summary=summary))
    summary.check()
    return pl.concat(frames), summary


def test_pairs_from_scores(tmp_path: Path) -> None:
    frame, summary = pair_up(write_rows(tmp_path / "s.parquet", ROWS))
    assert (summary.records_in, summary.records_used, summary.rows_out) == (14, 6, 6)
    assert dict(summary.dropped) == {"not_extreme": 2, "single_response": 1, "tie": 2, "not_score_row": 1,
                                     "identical_pair": 2}
    texts = {pid: rows for pid, rows in frame.group_by("pair_id").agg(pl.col("completion").list.first()
                                                                       .struct.field("content")).iter_rows()}
    # chosen first; Q5's tied top goes to the smaller id of "i" and "j"
    input_rows = build_rows(ROWS, source="hs")
    ids = dict(zip(input_rows["completion"].list.first().struct.field("content"), input_rows["id"], strict=False))
    top_q5 = "i" if ids["i"] < ids["j"] else "j"
    assert sorted(texts.values()) == sorted([["a", "c"], ["e", "d"], [top_q5, "k"]])
    assert row_problems(frame).is_empty() and pair_problems(frame).is_empty()
    assert set(frame["kind"]) == {"pairwise"} and frame["label"].to_list() == [True, False] * 3
    assert frame["pair_id"].to_list() == sorted(frame["pair_id"].to_list())
    for chosen, rejected in zip(frame.rows(named=True)[::2], frame.rows(named=True)[1::2], strict=True):
        assert chosen["pair_id"] == rejected["pair_id"] == xxhash.xxh3_128_hexdigest(
            (chosen["id"] + rejected["id"]).encode())
        assert chosen["prompt"] == rejected["prompt"] and chosen["score"] > rejected["score"]
        assert chosen["attributes"] == [{"name": "helpfulness", "value": chosen["score"] * 4}]
    kept = input_rows.filter(pl.col("id").is_in(frame["id"].implode()))
    assert kept.select("id", "score", "source_id", "group").sort("id").equals(
        frame.select("id", "score", "source_id", "group").sort("id"))


def test_pairs_do_not_depend_on_input_order_or_file_split(tmp_path: Path) -> None:
    whole, _ = pair_up(write_rows(tmp_path / "s.parquet", ROWS))
    first, second = write_rows(tmp_path / "a.parquet", ROWS[::-1][:7]), write_rows(tmp_path / "b.parquet", ROWS[::-1][7:])
    split, summary = pair_up(first, second)
    assert split.equals(whole) and summary.records_in == 14
    assert [i["file"] for i in summary.inputs] == ["a.parquet", "b.parquet"]


def test_source_option_replaces_the_source(tmp_path: Path) -> None:
    frame, _ = pair_up(write_rows(tmp_path / "s.parquet", ROWS), source="hs_pairs")
    assert set(frame["source"]) == {"hs_pairs"}


def test_sources_are_not_compared(tmp_path: Path) -> None:
    rows = [score_row(ONE_TURN, "a", 1.0)], [score_row(ONE_TURN, "b", 0.0)]
    _, summary = pair_up(write_rows(tmp_path / "a.parquet", rows[0], "x"), write_rows(tmp_path / "b.parquet", rows[1], "y"))
    assert dict(summary.dropped) == {"single_response": 2}


def test_not_parquet_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("{}\n")
    with pytest.raises(UftDataError, match="s.jsonl: --pairs-from-scores reads Parquet"):
        pair_up(path)


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    table = build_rows(ROWS[:2], source="hs").drop("score").to_arrow()
    pq.write_table(table, tmp_path / "s.parquet")
    with pytest.raises(UftDataError, match="s.parquet: column 'score' is missing"):
        pair_up(tmp_path / "s.parquet")


def test_bad_value_names_file_row_and_field(tmp_path: Path) -> None:
    table = build_rows(ROWS[:3], source="hs").with_columns(
        score=pl.Series([0.5, 1.5, 0.1], dtype=pl.Float32)).to_arrow().cast(SCHEMA)
    pq.write_table(table, tmp_path / "s.parquet")
    with pytest.raises(UftDataError, match=r"s.parquet: row 1: field 'score': is null, NaN or outside \[0, 1\]"):
        pair_up(tmp_path / "s.parquet")


def uftdata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UFTDATA, *args, "--quiet"], capture_output=True, text=True, check=False)


def test_cli_pairs_from_scores(tmp_path: Path) -> None:
    out = tmp_path / "pairs.parquet"
    done = uftdata("feedback", str(write_rows(tmp_path / "s.parquet", ROWS)), "-o", str(out), "--pairs-from-scores")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.schema.equals(SCHEMA) and table.num_rows == 6
    summary = json.loads(pq.read_metadata(out).metadata[b"uft.summary"])
    assert (summary["records_in"], summary["records_used"], summary["rows_out"]) == (14, 6, 6)


def test_cli_without_the_flag_points_to_it(tmp_path: Path) -> None:
    done = uftdata("feedback", str(write_rows(tmp_path / "s.parquet", ROWS)), "-o", str(tmp_path / "o.parquet"))
    assert done.returncode == 2 and "--pairs-from-scores" in done.stderr


def test_real_helpsteer_scores_to_pairs(samples_dir: Path, tmp_path: Path) -> None:
    """HelpSteer v1: consecutive rows share a prompt (up to 4 responses)."""
    scores, pairs = tmp_path / "scores.parquet", tmp_path / "pairs.parquet"
    done = uftdata("score", str(samples_dir / "helpsteer_v1_train.jsonl"), "-o", str(scores))
    assert done.returncode == 0, done.stderr
    done = uftdata("feedback", str(scores), "-o", str(pairs), "--pairs-from-scores")
    assert done.returncode == 0, done.stderr
    summary = json.loads(pq.read_metadata(pairs).metadata[b"uft.summary"])
    assert summary["records_in"] == pq.read_metadata(scores).num_rows
    assert summary["records_in"] == summary["records_used"] + sum(summary["dropped"].values())
    frame = pl.from_arrow(pq.read_table(pairs))
    assert isinstance(frame, pl.DataFrame) and frame.height == summary["records_used"] > 0
    assert row_problems(frame).is_empty() and pair_problems(frame).is_empty()
    by_pair = frame.group_by("pair_id").agg(pl.col("prompt").n_unique().alias("n"),
                                            (pl.col("score").filter("label").first()
                                             > pl.col("score").filter(~pl.col("label")).first()).alias("ordered"))
    assert by_pair["n"].to_list() == [1] * by_pair.height and by_pair["ordered"].all()


def test_arrow_offsets_do_not_matter(tmp_path: Path) -> None:
    """polars writes large_string / large_list; the schema check accepts either offset width."""
    frame = build_rows(ROWS[:2], source="hs")
    pq.write_table(frame.to_arrow(), tmp_path / "large.parquet")
    assert pa.types.is_large_string(pq.read_schema(tmp_path / "large.parquet").field("id").type)
    pairs, _ = pair_up(tmp_path / "large.parquet")
    assert pairs.height == 2
