"""`uftdata feedback`: every layout's adapter, drop reason and error on hand-written records, ids
against the `xxhash` library, the CLI end to end, and conformance over the real samples."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import xxhash
from conftest import UFTDATA

from uftdata.accounting import Summary
from uftdata.errors import RecordError, UftDataError
from uftdata.feedback import FeedbackOptions, adapter_for
from uftdata.layouts import BY_NAME
from uftdata.reader import expand_inputs
from uftdata.rejects import Rejects
from uftdata.rows import Drop, convert_files
from uftdata.schema import SCHEMA, empty_frame, pair_problems, row_problems

WHERE = "fb.jsonl: line 3"
DEFAULT = FeedbackOptions()
Q, A, B = {"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}, {"role": "assistant", "content": "B."}


def adapt(layout: str, record: dict, options: FeedbackOptions = DEFAULT, notes: Counter[str] | None = None) -> list[dict]:
    return adapter_for(BY_NAME[layout], options)(record, WHERE, Counter() if notes is None else notes)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def convert(path: Path, *, fmt: str | None = None, options: FeedbackOptions = DEFAULT,
            on_error: str = "raise") -> tuple[pl.DataFrame, Summary, Rejects]:
    rejects, summary = Rejects(on_error), Summary("feedback")  # type: ignore[arg-type]
    frames = list(convert_files(expand_inputs([path]), command="feedback", fmt=fmt, source="test",
                                adapter_for=lambda layout: adapter_for(layout, options), rejects=rejects,
                                summary=summary))
    summary.check()
    return (pl.concat(frames) if frames else empty_frame()), summary, rejects


def xxh(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def expected_id(prompt: list[dict], completion: dict) -> str:
    """docs/design.md, "Ids", written out independently of uftdata.ids."""
    def canon(messages: list[dict]) -> str:
        return "".join(m["role"] + "\x1f" + m["content"] + "\x1e" for m in messages)
    return xxh(canon(prompt) + "\x1d" + canon([completion]))


def hh(*turns: str) -> str:
    """A transcript from alternating-by-prefix turns: "H:text" / "A:text"."""
    names = {"H": "Human", "A": "Assistant"}
    return "".join(f"\n\n{names[t[0]]}: {t[2:]}" for t in turns)


# ---------------------------------------------------------------------------------------------
# Pairs: rows, ids, prompt forms


def test_pairwise_string_prompt_rows_and_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}])
    frame, summary, _ = convert(path)
    rows = frame.to_dicts()
    assert [r["label"] for r in rows] == [True, False]
    assert [r["score"] for r in rows] == [1.0, 0.0]
    assert {r["kind"] for r in rows} == {"pairwise"} and {r["source_id"] for r in rows} == {"in.jsonl:1"}
    assert [r["prompt"] for r in rows] == [[Q], [Q]] and [r["completion"] for r in rows] == [[A], [B]]
    assert [r["id"] for r in rows] == [expected_id([Q], A), expected_id([Q], B)]
    assert rows[0]["pair_id"] == rows[1]["pair_id"] == xxh(rows[0]["id"] + rows[1]["id"])
    assert {r["group"] for r in rows} == {xxh("Q?")} and {r["turn"] for r in rows} == {0}
    assert rows[0]["attributes"] is None
    assert summary.as_dict()["records_used"] == 1 and summary.rows_out == 2
    assert row_problems(frame).is_empty() and pair_problems(frame).is_empty()


def test_pairwise_message_list_prompt_and_message_completions() -> None:
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello"}, Q]
    chosen, rejected = adapt("pairwise", {"prompt": prompt, "chosen": [A], "rejected": B})
    assert chosen["prompt"] == rejected["prompt"] == prompt
    assert (chosen["completion"], rejected["completion"], chosen["pair"], rejected["pair"]) == (A, B, 0, 0)
    assert chosen["source_id"] == "fb.jsonl:3"


@pytest.mark.parametrize(("record", "field"), [
    ({"prompt": [Q, A], "chosen": "A.", "rejected": "B."}, "prompt"),  # prompt ends with the assistant
    ({"prompt": [{"role": "human", "content": "Q?"}], "chosen": "A.", "rejected": "B."}, "prompt"),
    ({"prompt": [], "chosen": "A.", "rejected": "B."}, "prompt"),
    ({"prompt": 7, "chosen": "A.", "rejected": "B."}, "prompt"),
    ({"prompt": "Q?", "chosen": [A, B], "rejected": "B."}, "chosen"),
    ({"prompt": "Q?", "chosen": "A.", "rejected": [Q]}, "rejected"),
])
def test_pairwise_errors_name_the_field(record: dict, field: str) -> None:
    with pytest.raises(RecordError) as error:
        adapt("pairwise", record)
    assert error.value.field == field


@pytest.mark.parametrize(("layout", "record", "reason"), [
    ("pairwise", {"prompt": "Q?", "chosen": "  \n", "rejected": "B."}, "empty_completion"),
    ("pairwise", {"prompt": "Q?", "chosen": "A.", "rejected": "A."}, "identical_pair"),
    ("pairwise_conversation", {"chosen": [Q, A], "rejected": [{"role": "user", "content": "Other?"}, B]}, "prompt_mismatch"),
    ("pairwise_conversation", {"chosen": [Q, A], "rejected": [Q, {"role": "assistant", "content": ""}]}, "empty_completion"),
    ("pairwise_conversation", {"chosen": [Q, A], "rejected": [Q, A]}, "identical_pair"),
    ("hh_rlhf", {"chosen": hh("H:Q?", "A:A."), "rejected": hh("H:Q?", "A:")}, "empty_completion"),
    ("hh_rlhf", {"chosen": hh("H:Q?", "A:A."), "rejected": hh("H:Q?", "A:A.")}, "identical_pair"),
    ("hh_rlhf", {"chosen": hh("H:Hi", "A:Yo", "H:Q?", "A:A."), "rejected": hh("H:Hi", "A:Hey", "H:Q?", "A:B.")},
     "prompt_mismatch"),
    # "Q?" is a character prefix of "Q?!"; compared as whole messages, the prompts differ
    ("hh_rlhf", {"chosen": hh("H:Q?", "A:A."), "rejected": hh("H:Q?!", "A:B.")}, "prompt_mismatch"),
    ("hh_rlhf", {"chosen": hh("H:Q?", "A:A.", "H:More?"), "rejected": hh("H:Q?", "A:B.")}, "trailing_user_turn"),
    ("hh_rlhf", {"chosen": hh("A:Hi", "H:Q?", "A:A."), "rejected": hh("A:Hi", "H:Q?", "A:B.")}, "starts_with_assistant"),
    ("hh_rlhf", {"chosen": hh("H:Q?", "A:A.", "A:A2."), "rejected": hh("H:Q?", "A:B.")}, "consecutive_same_role"),
])
def test_pair_drops(layout: str, record: dict, reason: str) -> None:
    with pytest.raises(Drop) as drop:
        adapt(layout, record)
    assert drop.value.reason == reason


def test_hh_rlhf_multi_turn_pair() -> None:
    chosen, rejected = adapt("hh_rlhf", {"chosen": hh("H:Hi", "A:Hello", "H:Q?", "A:A."),
                                         "rejected": hh("H:Hi", "A:Hello", "H:Q?", "A:B.")})
    prompt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, Q]
    assert chosen["prompt"] == rejected["prompt"] == prompt
    assert (chosen["completion"], rejected["completion"]) == (A, B)


@pytest.mark.parametrize(("chosen", "what"), [
    ("Preamble" + hh("H:Q?", "A:A."), "does not start"),
    ("no markers at all", "does not start"),
    ("", "holds no"),
    (["not", "text"], "not a string"),
])
def test_hh_rlhf_text_that_is_not_a_transcript_is_an_error(chosen: object, what: str) -> None:
    with pytest.raises(RecordError, match=what) as error:
        adapt("hh_rlhf", {"chosen": chosen, "rejected": hh("H:Q?", "A:B.")})
    assert error.value.field == "chosen"


def test_pairwise_conversation_needs_a_final_assistant_message() -> None:
    with pytest.raises(RecordError) as error:
        adapt("pairwise_conversation", {"chosen": [Q, A], "rejected": [Q, B, Q]})
    assert error.value.field == "rejected"


# ---------------------------------------------------------------------------------------------
# Ratings


def uf(score_chosen: object, score_rejected: object) -> dict:
    return {"prompt": "Q?", "prompt_id": "p", "chosen": [Q, A], "rejected": [Q, B], "messages": [Q, A],
            "score_chosen": score_chosen, "score_rejected": score_rejected}


def test_ratings_become_scores_and_attributes() -> None:
    """(8.5 - 1) / 9 and (3 - 1) / 9 on the default 1:10 scale."""
    chosen, rejected = adapt("pairwise_conversation", uf(8.5, 3))
    assert (chosen["score"], rejected["score"]) == pytest.approx((7.5 / 9, 2 / 9), rel=1e-15)
    assert chosen["attributes"] == [{"name": "rating", "value": 8.5}]
    assert rejected["attributes"] == [{"name": "rating", "value": 3.0}]
    assert (chosen["label"], rejected["label"]) == (True, False)


def test_ratings_off_gives_one_and_zero() -> None:
    chosen, rejected = adapt("pairwise_conversation", uf(8.5, 3), FeedbackOptions(ratings=False))
    assert (chosen["score"], rejected["score"], chosen["attributes"]) == (1.0, 0.0, None)


def test_custom_rating_scale() -> None:
    chosen, rejected = adapt("pairwise", {"prompt": "Q?", "chosen": "A.", "rejected": "B.", "score_chosen": 5,
                                          "score_rejected": 2}, FeedbackOptions(rating_scale=(1.0, 5.0)))
    assert (chosen["score"], rejected["score"]) == (1.0, 0.25)


def test_equal_ratings_keep_the_label_and_are_noted() -> None:
    notes: Counter[str] = Counter()
    chosen, rejected = adapt("pairwise_conversation", uf(7.0, 7.0), notes=notes)
    assert (chosen["label"], rejected["label"], chosen["score"], rejected["score"]) == (True, False, 6 / 9, 6 / 9)
    assert notes == {"tie": 1}
    adapt("pairwise_conversation", uf(2.0, 9.0), notes=notes)
    assert notes == {"tie": 1, "chosen_rated_lower": 1}


@pytest.mark.parametrize(("ratings", "field"), [((8.5, 11), "score_rejected"), ((0.5, 3), "score_chosen"),
                                                ((True, 3), "score_chosen"), ((8, "high"), "score_rejected")])
def test_rating_outside_the_scale_names_the_field(ratings: tuple, field: str) -> None:
    with pytest.raises(RecordError) as error:
        adapt("pairwise_conversation", uf(*ratings))
    assert error.value.field == field


@pytest.mark.parametrize("missing", [None, "N/A"])
def test_missing_rating_is_dropped(missing: object) -> None:
    with pytest.raises(Drop, match="missing_rating"):
        adapt("pairwise_conversation", uf(8.0, missing))


def test_options_are_checked() -> None:
    with pytest.raises(UftDataError, match="rating-scale"):
        FeedbackOptions(rating_scale=(10.0, 1.0))
    with pytest.raises(UftDataError, match="pairs-from-scores"):
        adapter_for(BY_NAME["uft"], DEFAULT)
    with pytest.raises(UftDataError, match="helpsteer2"):
        adapter_for(BY_NAME["helpsteer2"], DEFAULT)


# ---------------------------------------------------------------------------------------------
# HelpSteer2 preference


def hs2(strength: object, split: str = "train", prompt: str = "Q?") -> dict:
    return {"split": split, "prompt": prompt, "response_1": "A.", "response_2": "B.",
            "preference_strength": strength, "preference_statement": "..."}


@pytest.mark.parametrize(("strength", "chosen_text"), [(-3, "A."), (-1, "A."), (1, "B."), (3, "B.")])
def test_helpsteer2_preference_sign(strength: int, chosen_text: str) -> None:
    """Negative: response_1 is better; positive: response_2."""
    chosen, rejected = adapt("helpsteer2_preference", hs2(strength))
    assert chosen["completion"]["content"] == chosen_text and chosen["label"] and not rejected["label"]
    assert chosen["attributes"] == rejected["attributes"] == [{"name": "preference_strength", "value": float(strength)}]
    assert (chosen["score"], rejected["score"]) == (1.0, 0.0)


def test_helpsteer2_preference_multi_turn_prompt() -> None:
    chosen, _ = adapt("helpsteer2_preference", hs2(-2, prompt="Hi\n<extra_id_1>Assistant\nHello\n<extra_id_1>User\nQ?"))
    assert [m["role"] for m in chosen["prompt"]] == ["user", "assistant", "user"]
    assert chosen["prompt"][-1] == Q


@pytest.mark.parametrize(("record", "options", "reason"), [
    (hs2(0), DEFAULT, "tie"),
    (hs2(2, split="validation"), FeedbackOptions(split="train"), "other_split"),
    (hs2(9, split="validation"), FeedbackOptions(split="train"), "other_split"),  # not ours to judge
])
def test_helpsteer2_preference_drops(record: dict, options: FeedbackOptions, reason: str) -> None:
    with pytest.raises(Drop) as drop:
        adapt("helpsteer2_preference", record, options)
    assert drop.value.reason == reason


def test_helpsteer2_preference_split_kept() -> None:
    assert len(adapt("helpsteer2_preference", hs2(2, split="train"), FeedbackOptions(split="train"))) == 2
    assert len(adapt("helpsteer2_preference", hs2(2, split="validation"))) == 2  # no --split: every split


@pytest.mark.parametrize("strength", [4, -4, 1.5, 2.0, True, "2", None])
def test_helpsteer2_preference_bad_strength(strength: object) -> None:
    with pytest.raises(RecordError) as error:
        adapt("helpsteer2_preference", hs2(strength))
    assert error.value.field == "preference_strength"


# ---------------------------------------------------------------------------------------------
# Binary


@pytest.mark.parametrize("completion", ["A.", A, [A]])
@pytest.mark.parametrize("prompt", ["Q?", [Q]])
def test_binary_prompt_and_completion_forms(prompt: object, completion: object) -> None:
    (row,) = adapt("binary", {"prompt": prompt, "completion": completion, "label": True})
    assert (row["prompt"], row["completion"], row["kind"], row["score"], row["label"], row["pair"]) == \
        ([Q], A, "binary", 1.0, True, None)


def test_binary_messages(tmp_path: Path) -> None:
    path = tmp_path / "kto.json"
    path.write_text(json.dumps([{"messages": [Q, A], "label": False}, {"messages": [Q, B], "label": True}]))
    frame, _, _ = convert(path)
    assert frame.select("score", "label", "kind", "source_id").rows() == [
        (0.0, False, "binary", "kto.json:1"), (1.0, True, "binary", "kto.json:2")]
    assert frame["pair_id"].is_null().all() and row_problems(frame).is_empty()


@pytest.mark.parametrize(("layout", "record", "field"), [
    ("binary", {"prompt": "Q?", "completion": "A.", "label": "true"}, "label"),
    ("binary", {"prompt": "Q?", "completion": "A.", "label": 1}, "label"),
    ("binary", {"prompt": "Q?", "completion": "A.", "label": None}, "label"),
    ("binary", {"prompt": "Q?", "completion": [A, B], "label": True}, "completion"),
    ("binary", {"prompt": [A], "completion": "A.", "label": True}, "prompt"),
    ("binary_messages", {"messages": [Q, A, Q], "label": True}, "messages"),
    ("binary_messages", {"messages": "Q? A.", "label": True}, "messages"),
])
def test_binary_errors_name_the_field(layout: str, record: dict, field: str) -> None:
    with pytest.raises(RecordError) as error:
        adapt(layout, record)
    assert error.value.field == field


def test_binary_empty_completion_is_dropped() -> None:
    with pytest.raises(Drop, match="empty_completion"):
        adapt("binary_messages", {"messages": [Q, {"role": "assistant", "content": " "}], "label": True})


# ---------------------------------------------------------------------------------------------
# Accounting and the CLI


def test_every_record_is_accounted_with_skip(tmp_path: Path) -> None:
    records = [{"prompt": "Q?", "chosen": "A.", "rejected": "B."}, {"prompt": "Q?", "chosen": "A.", "rejected": "A."},
               {"prompt": "Q?", "chosen": "A.", "rejected": [Q]}, {"prompt": "R?", "chosen": "C.", "rejected": "D."}]
    frame, summary, rejects = convert(write_jsonl(tmp_path / "in.jsonl", records), on_error="skip")
    assert (summary.records_in, summary.records_used, dict(summary.dropped)) == \
        (4, 2, {"identical_pair": 1, "invalid_record": 1})
    assert rejects.records[0]["where"] == "in.jsonl: line 3" and rejects.records[0]["field"] == "rejected"
    assert frame.height == 4 and frame["pair_id"].n_unique() == 2


def uftdata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([UFTDATA, "feedback", *args, "--quiet"], capture_output=True, text=True, check=False)


def test_cli_end_to_end(tmp_path: Path) -> None:
    records = [{"chosen": hh("H:Q?", "A:A."), "rejected": hh("H:Q?", "A:B.")},
               {"chosen": hh("H:Q?", "A:A."), "rejected": hh("H:Q?", "A:")}]
    out = tmp_path / "out.parquet"
    done = uftdata(str(write_jsonl(tmp_path / "hh.jsonl", records)), "-o", str(out))
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.schema.equals(SCHEMA)
    assert table.select(["label", "score", "source", "source_id"]).to_pylist() == [
        {"label": True, "score": 1.0, "source": "hh", "source_id": "hh.jsonl:1"},
        {"label": False, "score": 0.0, "source": "hh", "source_id": "hh.jsonl:1"}]
    summary = json.loads(pq.read_metadata(out).metadata[b"uft.summary"])
    assert (summary["records_in"], summary["records_used"], summary["dropped"]) == (2, 1, {"empty_completion": 1})
    assert "dropped.empty_completion: 1" in done.stdout


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "uf.jsonl", [uf(8.0, 12.0)])
    done = uftdata(str(path), "-o", str(tmp_path / "out.parquet"))
    assert done.returncode == 2 and not (tmp_path / "out.parquet").exists()
    assert done.stderr.count("\n") == 1 and "uf.jsonl: line 1: field 'score_rejected'" in done.stderr
    done = uftdata(str(path), "-o", str(tmp_path / "out.parquet"), "--rating-scale", "1:12")
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------
# Conformance over the real samples


@pytest.mark.parametrize("name", ["hh-rlhf_harmless-base_test.jsonl", "hh-rlhf_helpful-base_train.jsonl"])
def test_real_hh_rlhf(samples_dir: Path, name: str) -> None:
    frame, summary, _ = convert(samples_dir / name)
    assert summary.records_in == 200 and summary.records_used + sum(summary.dropped.values()) == 200
    assert set(summary.dropped) <= {"empty_completion", "prompt_mismatch", "identical_pair", "trailing_user_turn",
                                    "starts_with_assistant", "consecutive_same_role"}
    assert frame.height == 2 * summary.records_used
    assert row_problems(frame).is_empty() and pair_problems(frame).is_empty()
    sides = frame.group_by("pair_id").agg(pl.col("prompt").n_unique().alias("prompts"),
                                          pl.col("prompt").first().list.last().struct.field("role").alias("last"))
    assert sides["prompts"].to_list() == [1] * summary.records_used
    assert set(sides["last"]) == {"user"}


def test_real_hh_rlhf_empty_final_turn_is_dropped(samples_dir: Path) -> None:
    _, summary, _ = convert(samples_dir / "hh-rlhf_harmless-base_test.jsonl")
    assert dict(summary.dropped) == {"empty_completion": 1}  # line 87: the chosen transcript ends "Assistant: "


def test_real_ultrafeedback_binarized(samples_dir: Path) -> None:
    path = samples_dir / "ultrafeedback_binarized_train_prefs.jsonl"
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    frame, summary, _ = convert(path)
    assert (summary.records_in, summary.records_used, summary.rows_out) == (16, 16, 32)
    ratings = [(r["score_chosen"], r["score_rejected"]) for r in raw]
    expected = np.array([(s - 1) / 9 for pair in ratings for s in pair], dtype=np.float32)
    assert np.array_equal(frame["score"].to_numpy(), expected)
    assert summary.notes["tie"] == sum(c == r for c, r in ratings) > 0
    assert frame["label"].to_list() == [True, False] * 16 and pair_problems(frame).is_empty()


def test_real_kto_mix(samples_dir: Path) -> None:
    frame, summary, _ = convert(samples_dir / "kto_mix_llamafactory_kto_en_demo.json")
    assert (summary.records_in, summary.records_used, frame.height) == (300, 300, 300)
    assert frame.group_by("label").len().sort("label").rows() == [(False, 150), (True, 150)]
    assert (frame["score"] == frame["label"].cast(pl.Float32)).all() and set(frame["kind"]) == {"binary"}
    assert row_problems(frame).is_empty()
