"""`uftdata unfold`: layouts -> sft rows, and every rule of the unfold.py docstring with its counts.

Expected rows are written out by hand (ids hashed here with the `xxhash` library, not with
`uftdata.ids`), so the tests pin both the unfolding and the ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
import xxhash
from polars.testing import assert_frame_equal

from uftdata import schema
from uftdata.accounting import Summary
from uftdata.reader import expand_inputs
from uftdata.rejects import Rejects
from uftdata.unfold import unfold_file

Message = dict[str, str]


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def system(text: str) -> Message:
    return {"role": "system", "content": text}


def canonical_id(prompt: Sequence[Message], completion: Sequence[Message]) -> str:
    """docs/design.md, "Ids": role \\x1f content \\x1e per message, \\x1d between prompt and completion."""
    def text(messages: Sequence[Message]) -> str:
        return "".join(f"{m['role']}\x1f{m['content']}\x1e" for m in messages)

    return xxhash.xxh3_128_hexdigest((text(prompt) + "\x1d" + text(completion)).encode("utf-8"))


def expected_rows(turns: list[tuple[list[Message], Message, str]], source: str) -> pl.DataFrame:
    """Schema rows for (prompt, completion, source_id) triples, computed by hand."""
    rows = []
    for prompt, completion, source_id in turns:
        first_user = next(m["content"] for m in prompt if m["role"] == "user")
        rows.append({
            "id": canonical_id(prompt, [completion]),
            "prompt": prompt,
            "completion": [completion],
            "score": 1.0,
            "kind": "sft",
            "label": None,
            "pair_id": None,
            "source": source,
            "source_id": source_id,
            "group": xxhash.xxh3_128_hexdigest(first_user.encode()),
            "turn": sum(m["role"] == "assistant" for m in prompt),
            "attributes": None,
        })
    return pl.DataFrame(rows, schema=schema.POLARS_SCHEMA, orient="row")


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def unfold_path(path: Path, *, fmt: str | None = None, source: str = "test") -> tuple[pl.DataFrame, Summary]:
    summary = Summary("unfold")
    (f,) = expand_inputs([path])
    frames = list(unfold_file(f, fmt=fmt, source=source, rejects=Rejects.raising(), summary=summary, progress=None))
    summary.check()
    rows = pl.concat(frames) if frames else schema.empty_frame()
    return rows.select(schema.COLUMNS), summary


def unfold_records(tmp_path: Path, records: list[dict], name: str = "conv.jsonl") -> tuple[pl.DataFrame, Summary]:
    return unfold_path(write_jsonl(tmp_path / name, records))


def counts(summary: Summary) -> dict[str, object]:
    return {k: v for k, v in summary.as_dict().items() if k not in ("command", "inputs")}


# ---------------------------------------------------------------------------------------------
# Layouts


def test_raw_ultrachat(tmp_path: Path) -> None:
    records = [
        {"id": "uc-1", "data": ["How do I boil an egg?", "Put it in boiling water for nine minutes.",
                                "And a soft one?", "Six minutes, then cool it in cold water."]},
        {"id": "uc-2", "data": ["What is a prime?", "A number with exactly two divisors."]},
    ]
    rows, summary = unfold_records(tmp_path, records)
    q1, a1, q2, a2 = records[0]["data"]
    expected = expected_rows([
        ([user(q1)], assistant(a1), "uc-1#0"),
        ([user(q1), assistant(a1), user(q2)], assistant(a2), "uc-1#1"),
        ([user("What is a prime?")], assistant("A number with exactly two divisors."), "uc-2#0"),
    ], "test")
    assert_frame_equal(rows, expected)
    assert counts(summary) == {"records_in": 2, "records_used": 2, "rows_out": 3, "dropped": {},
                               "notes": {"assistant_turns_in": 3}}
    assert summary.inputs == [{"file": "conv.jsonl", "layout": "ultrachat"}]


def test_sharegpt_with_system_and_role_names(tmp_path: Path) -> None:
    record = {"id": "sg-7", "conversations": [
        {"from": "system", "value": "You are a travel guide."},
        {"from": "human", "value": "Best month for Kyoto?"},
        {"from": "gpt", "value": "April for cherry blossoms, November for maple leaves."},
        {"from": "Human", "value": "And Lisbon?"},
        {"from": "chatgpt", "value": "May or September: warm but not crowded."},
    ]}
    rows, summary = unfold_records(tmp_path, [record])
    s, q1, a1, q2, a2 = (m["value"] for m in record["conversations"])
    expected = expected_rows([
        ([system(s), user(q1)], assistant(a1), "sg-7#0"),
        ([system(s), user(q1), assistant(a1), user(q2)], assistant(a2), "sg-7#1"),
    ], "test")
    assert_frame_equal(rows, expected)
    assert summary.inputs[0]["layout"] == "sharegpt"


def test_messages_with_system_and_no_id(tmp_path: Path) -> None:
    conv = [system("Answer in one sentence."), user("Why is the sky blue?"),
            assistant("Air scatters blue light more than red."), user("And sunsets?"),
            assistant("At sunset light crosses more air, so the blue is scattered away.")]
    rows, _ = unfold_records(tmp_path, [{"messages": conv[:3]}, {"messages": conv}], name="chat.jsonl")
    expected = expected_rows([
        (conv[:2], conv[2], "chat.jsonl:1#0"),
        (conv[:2], conv[2], "chat.jsonl:2#0"),
        (conv[:4], conv[4], "chat.jsonl:2#1"),
    ], "test")
    assert_frame_equal(rows, expected)
    # identical (prompt, completion) from two records: same id, distinct source_id
    assert rows["id"][0] == rows["id"][1]


@pytest.mark.parametrize("id_field", ["id", "prompt_id", "conversation_id"])
def test_record_id_fields(tmp_path: Path, id_field: str) -> None:
    rows, _ = unfold_records(tmp_path, [{id_field: "r1", "messages": [user("Hi"), assistant("Hello")]}])
    assert rows["source_id"].to_list() == ["r1#0"]


def test_integer_ids(tmp_path: Path) -> None:
    rows, _ = unfold_records(tmp_path, [{"id": 7, "data": ["Hi", "Hello"]}, {"id": 8, "data": ["Yo", "Hey"]}])
    assert rows["source_id"].to_list() == ["7#0", "8#0"]


def test_missing_id_falls_back_to_file_line(tmp_path: Path) -> None:
    rows, _ = unfold_records(tmp_path, [{"id": "a", "data": ["Hi", "Hello"]}, {"data": ["Yo", "Hey"]}], name="m.jsonl")
    assert rows["source_id"].to_list() == ["a#0", "m.jsonl:2#0"]


def test_json_array_and_parquet_positions(tmp_path: Path) -> None:
    records = [{"data": ["Q1", "A1"]}, {"data": ["Q2", "A2", "Q3", "A3"]}]
    (tmp_path / "arr.json").write_text(json.dumps(records), encoding="utf-8")
    pl.DataFrame(records).write_parquet(tmp_path / "tab.parquet")
    rows, _ = unfold_path(tmp_path / "arr.json")
    assert rows["source_id"].to_list() == ["arr.json:1#0", "arr.json:2#0", "arr.json:2#1"]  # record N, 1-based
    rows, _ = unfold_path(tmp_path / "tab.parquet")
    assert rows["source_id"].to_list() == ["tab.parquet:0#0", "tab.parquet:1#0", "tab.parquet:1#1"]  # row N, 0-based


def test_format_option_forces_layout(tmp_path: Path) -> None:
    rows, summary = unfold_path(write_jsonl(tmp_path / "c.jsonl", [{"messages": [user("Hi"), assistant("Yo")]}]),
                                fmt="ultrachat_200k")
    assert rows.height == 1
    assert summary.inputs[0]["layout"] == "messages"


# ---------------------------------------------------------------------------------------------
# Rules


def test_trailing_user_turn_is_a_note(tmp_path: Path) -> None:
    rows, summary = unfold_records(tmp_path, [{"id": "t", "data": ["Q1", "A1", "Q2", "A2", "Q3"]}])
    assert rows["source_id"].to_list() == ["t#0", "t#1"]
    assert counts(summary) == {"records_in": 1, "records_used": 1, "rows_out": 2, "dropped": {},
                               "notes": {"assistant_turns_in": 2, "trailing_user_turn": 1}}


@pytest.mark.parametrize("empty", ["", "   ", "\n\t", None])
def test_empty_message_mid_conversation(tmp_path: Path, empty: str | None) -> None:
    rows, summary = unfold_records(tmp_path, [{"id": "e", "data": ["Q1", "A1", "Q2", empty, "Q3", "A3"]}])
    assert rows["source_id"].to_list() == ["e#0"]
    assert counts(summary) == {"records_in": 1, "records_used": 1, "rows_out": 1, "dropped": {},
                               "turns_dropped": {"empty_message": 2}, "notes": {"assistant_turns_in": 3}}


def test_empty_user_message_drops_later_turns(tmp_path: Path) -> None:
    rows, summary = unfold_records(tmp_path, [{"id": "e", "data": ["Q1", "A1", "", "A2"]}])
    assert rows["source_id"].to_list() == ["e#0"]
    assert summary.turns_dropped == {"empty_message": 1}


def test_unknown_role(tmp_path: Path) -> None:
    conv = [user("Q1"), assistant("A1"), {"role": "tool", "content": "{}"}, user("Q2"), assistant("A2")]
    rows, summary = unfold_records(tmp_path, [{"id": "u", "messages": conv}])
    assert rows["source_id"].to_list() == ["u#0"]
    assert counts(summary) == {"records_in": 1, "records_used": 1, "rows_out": 1, "dropped": {},
                               "turns_dropped": {"unknown_role": 1}, "notes": {"assistant_turns_in": 2}}


def test_unknown_sharegpt_speaker(tmp_path: Path) -> None:
    conv = [{"from": "narrator", "value": "Once upon a time"}, {"from": "gpt", "value": "Hello"}]
    rows, summary = unfold_records(tmp_path, [{"id": "n", "conversations": conv}])
    assert rows.height == 0
    assert summary.dropped == {"unknown_role": 1}
    assert summary.turns_dropped == {"unknown_role": 1}


def test_misplaced_system(tmp_path: Path) -> None:
    conv = [user("Q1"), assistant("A1"), system("Now be rude."), user("Q2"), assistant("A2")]
    rows, summary = unfold_records(tmp_path, [{"id": "s", "messages": conv}])
    assert rows["source_id"].to_list() == ["s#0"]
    assert summary.turns_dropped == {"misplaced_system": 1}
    assert summary.records_used == 1


def test_two_system_messages_drop_the_record(tmp_path: Path) -> None:
    conv = [system("S1"), system("S2"), user("Q"), assistant("A")]
    rows, summary = unfold_records(tmp_path, [{"id": "s", "messages": conv}])
    assert rows.height == 0
    assert counts(summary) == {"records_in": 1, "records_used": 0, "rows_out": 0,
                               "dropped": {"misplaced_system": 1}, "turns_dropped": {"misplaced_system": 1},
                               "notes": {"assistant_turns_in": 1}}


@pytest.mark.parametrize("prefix", [[], [system("S")]])
def test_starts_with_assistant_drops_the_record(tmp_path: Path, prefix: list[Message]) -> None:
    conv = [*prefix, assistant("Hi! How can I help?"), user("Q"), assistant("A")]
    rows, summary = unfold_records(tmp_path, [{"id": "a", "messages": conv}])
    assert rows.height == 0
    assert counts(summary) == {"records_in": 1, "records_used": 0, "rows_out": 0,
                               "dropped": {"starts_with_assistant": 1},
                               "turns_dropped": {"starts_with_assistant": 2}, "notes": {"assistant_turns_in": 2}}


def test_consecutive_same_role(tmp_path: Path) -> None:
    records = [
        {"id": "aa", "messages": [user("Q1"), assistant("A1"), assistant("A1b"), user("Q2"), assistant("A2")]},
        {"id": "uu", "messages": [user("Q1"), user("Q1b"), assistant("A1")]},
    ]
    rows, summary = unfold_records(tmp_path, records)
    assert rows["source_id"].to_list() == ["aa#0"]
    assert counts(summary) == {"records_in": 2, "records_used": 1, "rows_out": 1,
                               "dropped": {"consecutive_same_role": 1},
                               "turns_dropped": {"consecutive_same_role": 3}, "notes": {"assistant_turns_in": 4}}


def test_no_assistant_turn(tmp_path: Path) -> None:
    records = [{"id": "e", "messages": []}, {"id": "s", "messages": [system("S"), user("Q")]}]
    rows, summary = unfold_records(tmp_path, records)
    assert rows.height == 0
    assert summary.dropped == {"no_assistant_turn": 2}
    assert summary.records_used == 0


def test_first_problem_names_a_dropped_record(tmp_path: Path) -> None:
    # the first problem (empty answer) is the reason, not the later unknown role
    conv = [user("Q1"), assistant(" "), {"role": "robot", "content": "beep"}, assistant("A2")]
    rows, summary = unfold_records(tmp_path, [{"id": "f", "messages": conv}])
    assert rows.height == 0
    assert summary.dropped == {"empty_message": 1}
    assert summary.turns_dropped == {"empty_message": 2}


def test_lone_question_is_dropped_not_noted(tmp_path: Path) -> None:
    # regression: the trailing user message of a dropped conversation was also counted as a note
    _, summary = unfold_records(tmp_path, [{"id": "q", "data": ["Is anybody there?"]}])
    assert summary.dropped == {"no_assistant_turn": 1}
    assert summary.notes["trailing_user_turn"] == 0


# ---------------------------------------------------------------------------------------------
# Accounting


def test_accounting_identities_on_a_mixed_file(tmp_path: Path) -> None:
    records = [
        {"id": "ok", "data": ["Q1", "A1", "Q2", "A2"]},  # 2 rows
        {"id": "trail", "data": ["Q1", "A1", "Q2"]},  # 1 row, note
        {"id": "mid", "data": ["Q1", "A1", "Q2", "", "Q3", "A3"]},  # 1 row, 2 turns dropped
        {"id": "lone", "data": ["Q1"]},  # dropped: no_assistant_turn
        {"id": "none", "data": []},  # dropped: no_assistant_turn
        {"id": "first", "data": ["Q1", ""]},  # dropped: empty_message, 1 turn dropped
    ]
    rows, summary = unfold_records(tmp_path, records)
    assistant_turns_in = sum(len(r["data"]) // 2 for r in records)
    assert assistant_turns_in == 7
    assert summary.notes["assistant_turns_in"] == assistant_turns_in
    assert summary.records_in == len(records) == summary.records_used + sum(summary.dropped.values())
    assert assistant_turns_in == summary.rows_out + sum(summary.turns_dropped.values())
    assert summary.rows_out == rows.height == 4
    assert summary.dropped == {"no_assistant_turn": 2, "empty_message": 1}
    assert summary.turns_dropped == {"empty_message": 3}


# ---------------------------------------------------------------------------------------------
# Conformance with the real ultrachat_200k records


def test_ultrachat_200k_sample(samples_dir: Path) -> None:
    path = samples_dir / "ultrachat_200k_train_sft.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    n_assistant = sum(m["role"] == "assistant" for r in records for m in r["messages"])
    assert (len(records), n_assistant) == (20, 68)

    rows, summary = unfold_path(path, source="ultrachat_200k")
    assert rows.height == n_assistant
    assert counts(summary) == {"records_in": 20, "records_used": 20, "rows_out": 68, "dropped": {},
                               "notes": {"assistant_turns_in": 68}}
    assert summary.inputs == [{"file": path.name, "layout": "messages"}]
    assert schema.row_problems(rows).height == 0
    assert schema.schema_problems(schema.to_arrow(rows).schema) == []
    # source_id: the record's prompt_id and the turn; the last turn of record 0 has every earlier message
    first = records[0]
    n_turns = sum(m["role"] == "assistant" for m in first["messages"])
    assert rows["source_id"].head(n_turns).to_list() == [f"{first['prompt_id']}#{t}" for t in range(n_turns)]
    last = rows.row(n_turns - 1, named=True)
    assert last["prompt"] + last["completion"] == first["messages"]
    assert last["id"] == canonical_id(last["prompt"], last["completion"])
    assert last["group"] == xxhash.xxh3_128_hexdigest(first["prompt"].encode("utf-8"))
