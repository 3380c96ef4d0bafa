"""Reading inputs: containers, folders, positions, blocks, `--on-error skip`, determinism.

The reader functions are called directly; whole runs go through the typer app in-process
(`typer.testing.CliRunner`), which is what `uftdata unfold` runs minus the interpreter start.
"""

from __future__ import annotations

import filecmp
import gzip
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from uftdata import cli, reader, writer
from uftdata.accounting import Summary
from uftdata.errors import RecordError, UftDataError
from uftdata.reader import LINE, expand_inputs, first_record, iter_frames, iter_records
from uftdata.rejects import Rejects
from uftdata.unfold import unfold_file

TOPICS = ["bread", "rice", "python lists", "git rebase", "Lisbon", "Kyoto", "rainbows", "tides", "yeast", "ferries"]


def conversation(i: int) -> dict:
    """A deterministic raw UltraChat record with 1-3 assistant turns."""
    topic = TOPICS[i % len(TOPICS)]
    data = []
    for turn in range(1 + i % 3):
        data += [f"Question {turn + 1} about {topic} (record {i})?", f"Answer {turn + 1} about {topic}: it depends."]
    return {"id": f"uc-{i:04d}", "data": data}


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def unfold(*args: str | Path) -> str:
    """`uftdata unfold ARGS` in-process; returns stdout, fails the test on a non-zero exit."""
    result = CliRunner().invoke(cli.app, ["unfold", *map(str, args), "--quiet"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.stdout


def unfold_error(*args: str | Path) -> UftDataError:
    result = CliRunner().invoke(cli.app, ["unfold", *map(str, args), "--quiet"])
    assert isinstance(result.exception, UftDataError), result.output
    return result.exception


def read_rows(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path)


@pytest.fixture
def records() -> list[dict]:
    return [conversation(i) for i in range(12)]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """JSONL blocks of 300 bytes instead of 16 MiB, so a small file spans many blocks."""
    monkeypatch.setattr(reader, "BLOCK_BYTES", 300)
    return reader.BLOCK_BYTES


# ---------------------------------------------------------------------------------------------
# Files and folders


def test_expand_inputs_folder_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ["b/z.jsonl", "a.json", "b/a.parquet", "c.jsonl.gz", "d.NDJSON", "e.JSONL"]:
        (tmp_path / name).write_bytes(b"")
    for ignored in ["notes.txt", "README.md", ".rows.parquet.123.partial", "b/x.gz"]:
        (tmp_path / ignored).write_bytes(b"")
    files = expand_inputs([tmp_path])
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == [
        "a.json", "b/a.parquet", "b/z.jsonl", "c.jsonl.gz", "d.NDJSON", "e.JSONL"]
    assert [(f.container, f.gzipped) for f in files] == [
        ("json", False), ("parquet", False), ("jsonl", False), ("jsonl", True), ("jsonl", False), ("jsonl", False)]


def test_expand_inputs_keeps_the_order_given(tmp_path: Path) -> None:
    for name in ["b.jsonl", "a.jsonl"]:
        (tmp_path / name).write_text("{}\n")
    assert [f.name for f in expand_inputs([tmp_path / "b.jsonl", tmp_path / "a.jsonl"])] == ["b.jsonl", "a.jsonl"]


def test_json_file_holding_lines_is_read_as_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "lines.json"
    path.write_text('  \n{"a": 1}\n{"a": 2}\n')
    (f,) = expand_inputs([path])
    assert f.container == "jsonl"
    assert list(iter_records(f, Rejects.raising())) == [("lines.json: line 2", {"a": 1}), ("lines.json: line 3", {"a": 2})]


@pytest.mark.parametrize("paths", [[], ["missing.jsonl"], ["notes.txt"]])
def test_expand_inputs_errors(tmp_path: Path, paths: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UftDataError):
        expand_inputs([tmp_path / p for p in paths])


# ---------------------------------------------------------------------------------------------
# Positions


def test_record_positions_per_container(tmp_path: Path) -> None:
    rows = [{"a": 1}, {"a": 2}]
    (tmp_path / "x.jsonl").write_text('\n{"a": 1}\n\n  \n{"a": 2}')  # blank lines; no final newline
    (tmp_path / "x.json").write_text(json.dumps(rows))
    pl.DataFrame(rows).write_parquet(tmp_path / "x.parquet")
    (tmp_path / "x.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n\n{"a": 2}\n'))
    got = {f.name: [where for where, _ in iter_records(f, Rejects.raising())] for f in expand_inputs([tmp_path])}
    assert got == {
        "x.jsonl": ["x.jsonl: line 2", "x.jsonl: line 5"],
        "x.json": ["x.json: record 1", "x.json: record 2"],
        "x.parquet": ["x.parquet: row 0", "x.parquet: row 1"],
        "x.jsonl.gz": ["x.jsonl.gz: line 1", "x.jsonl.gz: line 3"],
    }


def test_first_record_of_an_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(UftDataError, match=r"e\.jsonl: file holds no records"):
        first_record(expand_inputs([tmp_path / "e.jsonl"])[0])


SCHEMA = pa.schema([pa.field("data", pa.list_(pa.string())), pa.field("id", pa.string())])


def frames_of(path: Path, rejects: Rejects | None = None) -> list[pl.DataFrame]:
    (f,) = expand_inputs([path])
    return list(iter_frames(f, SCHEMA, ["data"], rejects or Rejects.raising()))


def test_iter_frames_line_column_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('\n{"id": "a", "data": ["q", "a"]}\n\n{"id": "b", "data": ["q"]}\n   \n{"data": ["x", "y"]}\n')
    (frame,) = frames_of(path)
    assert_frame_equal(frame, pl.DataFrame(
        {"data": [["q", "a"], ["q"], ["x", "y"]], "id": ["a", "b", None], LINE: [2, 4, 6]},
        schema={"data": pl.List(pl.String), "id": pl.String, LINE: pl.Int64},
    ))


def test_blank_lines_give_right_source_ids(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('\n\n{"data": ["q1", "a1"]}\n\n{"data": ["q2", "a2", "q3", "a3"]}\n')
    unfold(path, "-o", tmp_path / "rows.parquet")
    assert read_rows(tmp_path / "rows.parquet")["source_id"].to_list() == ["c.jsonl:3#0", "c.jsonl:5#0", "c.jsonl:5#1"]


# ---------------------------------------------------------------------------------------------
# Blocks


def test_small_blocks_keep_positions(tmp_path: Path, records: list[dict], small_blocks: int) -> None:
    path = tmp_path / "c.jsonl"
    lines = jsonl(records).splitlines(keepends=True)
    lines.insert(5, "\n")  # a blank line in an early block, another in a late one
    lines.insert(11, "  \n")
    path.write_text("".join(lines))
    frames = frames_of(path)
    assert len(frames) >= 6, "the file should span many blocks"
    got = pl.concat(frames)
    expected_lines = [n for n, line in enumerate(lines, start=1) if line.strip()]
    assert got[LINE].to_list() == expected_lines
    assert got["id"].to_list() == [r["id"] for r in records]


@pytest.mark.parametrize("variant", ["late", "last_without_newline", "gzip"])
def test_bad_line_in_a_late_block_is_named_exactly(tmp_path: Path, records: list[dict], small_blocks: int,
                                                   variant: str) -> None:
    prefix = jsonl(records) + "\n"  # 12 records and a blank line: many blocks before the bad line
    bad_line = prefix.count("\n") + 1
    bad = '{"id": "bad", "data": ["q", 7]}'
    body = prefix + bad if variant == "last_without_newline" else prefix + bad + "\n" + jsonl(records[:3])
    path = tmp_path / ("c.jsonl.gz" if variant == "gzip" else "c.jsonl")
    data = body.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if variant == "gzip" else data)
    assert len(data) > 4 * small_blocks
    with pytest.raises(RecordError) as error:
        frames_of(path)
    assert error.value.line() == (f"{path.name}: line {bad_line}: field 'data': has the wrong type (got ['q', 7]); "
                                  "expected list<item: string>.")


def test_bad_line_in_a_late_block_through_the_cli(tmp_path: Path, records: list[dict], small_blocks: int) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(jsonl(records) + "{not json\n" + jsonl(records[:2]))
    error = unfold_error(path, "-o", tmp_path / "rows.parquet")
    assert error.line() == f"c.jsonl: line {len(records) + 1}: is not JSON (Expecting property name enclosed in " \
                           "double quotes at column 2)."
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]


def test_block_size_does_not_change_rows_or_bytes(tmp_path: Path, records: list[dict],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(jsonl(records * 3))  # 3 x 12 records, ids repeat: still fine for unfold
    monkeypatch.setattr(writer, "ROW_GROUP_ROWS", 7)  # several row groups from a small file
    unfold(path, "-o", tmp_path / "one_block.parquet")
    monkeypatch.setattr(reader, "BLOCK_BYTES", 256)
    unfold(path, "-o", tmp_path / "many_blocks.parquet")
    assert pq.ParquetFile(tmp_path / "one_block.parquet").metadata.num_row_groups > 1
    assert_frame_equal(read_rows(tmp_path / "one_block.parquet"), read_rows(tmp_path / "many_blocks.parquet"))
    assert filecmp.cmp(tmp_path / "one_block.parquet", tmp_path / "many_blocks.parquet", shallow=False)


def test_block_bytes_setting_is_used(tmp_path: Path, records: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    # regression: the size was a default argument bound at import time, so this setting did nothing
    monkeypatch.setattr(reader, "BLOCK_BYTES", 300)
    path = tmp_path / "c.jsonl"
    path.write_text(jsonl(records))
    assert len(frames_of(path)) > 1


def test_two_objects_on_one_line_are_an_error_even_next_to_a_blank_line(tmp_path: Path) -> None:
    # regression: the fast path compared only counts, so the blank line hid the extra object and
    # shifted the line numbers of the records after it
    path = tmp_path / "c.jsonl"
    a, b, c = (json.dumps(conversation(i)) for i in range(3))
    path.write_text(f"{a}\n{b}{c}\n\n{a}\n")
    error = unfold_error(path, "-o", tmp_path / "rows.parquet")
    assert error.line().startswith("c.jsonl: line 2: is not JSON")


# ---------------------------------------------------------------------------------------------
# Containers and several inputs give the same rows


def test_every_container_gives_the_same_rows(tmp_path: Path, records: list[dict]) -> None:
    (tmp_path / "in").mkdir()
    body = jsonl(records)
    (tmp_path / "in/c.jsonl").write_text(body)
    (tmp_path / "in/c.json").write_text(json.dumps(records, indent=1))
    pl.DataFrame(records).write_parquet(tmp_path / "in/c.parquet")
    (tmp_path / "in/c.jsonl.gz").write_bytes(gzip.compress(body.encode(), mtime=0))
    (tmp_path / "in/c.ndjson").write_text(body.replace("\n", "\r\n"))  # CRLF line ends
    outputs = {}
    for f in sorted((tmp_path / "in").iterdir()):
        out = tmp_path / f"{f.name}.parquet"
        unfold(f, "-o", out, "--source", "ultrachat")
        outputs[f.name] = read_rows(out)
    reference = outputs.pop("c.jsonl")
    assert reference.height == sum(len(r["data"]) // 2 for r in records)
    for name, rows in outputs.items():
        assert rows.equals(reference), name
        assert_frame_equal(rows, reference)


def test_folder_and_two_inputs(tmp_path: Path, records: list[dict]) -> None:
    (tmp_path / "in/sub").mkdir(parents=True)
    (tmp_path / "in/a.jsonl").write_text(jsonl(records[:5]))
    (tmp_path / "in/sub/b.jsonl.gz").write_bytes(gzip.compress(jsonl(records[5:]).encode(), mtime=0))
    (tmp_path / "in/notes.txt").write_text("not an input")
    (tmp_path / "all.jsonl").write_text(jsonl(records))

    stdout = unfold(tmp_path / "in", "-o", tmp_path / "folder.parquet")
    unfold(tmp_path / "in/a.jsonl", tmp_path / "in/sub/b.jsonl.gz", "-o", tmp_path / "two.parquet")
    unfold(tmp_path / "all.jsonl", "-o", tmp_path / "one.parquet", "--source", "a")

    folder, two, one = (read_rows(tmp_path / f"{n}.parquet") for n in ("folder", "two", "one"))
    assert_frame_equal(folder.drop("source"), two.drop("source"))
    assert_frame_equal(folder.drop("source"), one.drop("source"))  # ids in the records: source_id names no file
    # The default source: a folder's name for all its files; each input file its own name.
    assert set(folder["source"]) == {"in"} and set(one["source"]) == {"a"}
    from_a = sum(len(r["data"]) // 2 for r in records[:5])
    assert two["source"].to_list() == ["a"] * from_a + ["b"] * (two.height - from_a)
    n_rows = sum(len(r["data"]) // 2 for r in records)
    assert stdout.splitlines()[0] == f"unfold: 12 records in, 12 used, 0 dropped -> {n_rows} rows in " \
                                     f"{tmp_path / 'folder.parquet'}"
    summary = json.loads(pq.read_metadata(tmp_path / "folder.parquet").metadata[b"uft.summary"])
    assert summary["inputs"] == [{"file": "a.jsonl", "layout": "ultrachat"}, {"file": "b.jsonl.gz", "layout": "ultrachat"}]


def test_split_files_without_ids_give_the_same_rows_apart_from_source_id(tmp_path: Path, records: list[dict]) -> None:
    anonymous = [{"data": r["data"]} for r in records]
    (tmp_path / "all.jsonl").write_text(jsonl(anonymous))
    (tmp_path / "p1.jsonl").write_text(jsonl(anonymous[:7]))
    (tmp_path / "p2.jsonl").write_text(jsonl(anonymous[7:]))
    unfold(tmp_path / "all.jsonl", "-o", tmp_path / "one.parquet", "--source", "s")
    unfold(tmp_path / "p1.jsonl", tmp_path / "p2.jsonl", "-o", tmp_path / "two.parquet", "--source", "s")
    one, two = read_rows(tmp_path / "one.parquet"), read_rows(tmp_path / "two.parquet")
    assert_frame_equal(one.drop("source_id").sort("id"), two.drop("source_id").sort("id"))
    last_turns = len(anonymous[-1]["data"]) // 2
    assert two["source_id"].to_list()[-last_turns:] == [f"p2.jsonl:5#{t}" for t in range(last_turns)]


# ---------------------------------------------------------------------------------------------
# Determinism


def test_two_runs_are_byte_identical(tmp_path: Path, records: list[dict]) -> None:
    (tmp_path / "c.jsonl").write_text(jsonl(records))
    unfold(tmp_path / "c.jsonl", "-o", tmp_path / "r1.parquet")
    unfold(tmp_path / "c.jsonl", "-o", tmp_path / "r2.parquet")
    assert filecmp.cmp(tmp_path / "r1.parquet", tmp_path / "r2.parquet", shallow=False)


# ---------------------------------------------------------------------------------------------
# --on-error skip


def test_on_error_skip_writes_rejects_and_counts_them(tmp_path: Path) -> None:
    good = [conversation(1), conversation(2), conversation(3)]
    lines = [
        json.dumps(good[0]),  # 1
        "",  # 2 (blank)
        "not json",  # 3
        '{"id": "c"}',  # 4: data missing
        json.dumps(good[1]),  # 5
        '{"id": "e", "data": ["q", 5]}',  # 6: mistyped
        json.dumps(good[2]),  # 7
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "rows.parquet"
    stdout = unfold(path, "-o", out, "--on-error", "skip")

    rejects = [json.loads(line) for line in (tmp_path / "rows.rejects.jsonl").read_text().splitlines()]
    assert [(r["where"], r["field"]) for r in rejects] == [("c.jsonl: line 3", ""), ("c.jsonl: line 4", "data"),
                                                           ("c.jsonl: line 6", "data")]
    assert rejects[0]["error"] == "c.jsonl: line 3: is not JSON (Expecting value at column 1)."
    assert rejects[0]["record"] == "not json"
    assert rejects[1]["error"] == "c.jsonl: line 4: field 'data': is missing or null."
    assert rejects[1]["record"]["id"] == "c"
    assert rejects[2]["record"] == {"id": "e", "data": ["q", 5]}

    n_rows = sum(len(r["data"]) // 2 for r in good)
    assert read_rows(out)["source_id"].str.extract(r"^(uc-\d+)").unique(maintain_order=True).to_list() == [
        r["id"] for r in good]
    summary = json.loads(pq.read_metadata(out).metadata[b"uft.summary"])
    assert {k: summary[k] for k in ("records_in", "records_used", "rows_out", "dropped")} == {
        "records_in": 6, "records_used": 3, "rows_out": n_rows, "dropped": {"invalid_record": 3}}
    assert stdout.splitlines() == [
        f"unfold: 6 records in, 3 used, 3 dropped -> {n_rows} rows in {out}",
        "  dropped.invalid_record: 3",
        f"  notes.assistant_turns_in: {n_rows}",
        f"  rejects: {tmp_path / 'rows.rejects.jsonl'}",
    ]


def test_on_error_skip_with_named_rejects_file(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(json.dumps(conversation(1)) + '\n{"id": "x"}\n')
    unfold(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet", "--on-error", "skip",
           "--rejects", tmp_path / "bad/rejected.jsonl")
    assert len((tmp_path / "bad/rejected.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "rows.rejects.jsonl").exists()


def test_no_rejects_file_when_nothing_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(jsonl([conversation(1)]))
    stdout = unfold(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet", "--on-error", "skip")
    assert "  rejects:" not in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "rows.parquet"]


def test_on_error_skip_in_process_accounting(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(json.dumps(conversation(1)) + '\n{"id": "x"}\n[1]\n')
    rejects, summary = Rejects("skip"), Summary("unfold")
    (f,) = expand_inputs([tmp_path / "c.jsonl"])
    rows = pl.concat(unfold_file(f, fmt=None, source="s", rejects=rejects, summary=summary, progress=None))
    summary.check()
    assert (summary.records_in, summary.records_used, rows.height) == (3, 1, 2)
    assert rejects.by_field == {"data": 1, "record": 1}


def test_first_bad_line_is_reported_first(tmp_path: Path) -> None:
    # regression: the line-by-line path checked types while building the table and missing fields
    # after it, so the wrong type on line 3 was reported instead of the missing field on line 2
    (tmp_path / "c.jsonl").write_text(json.dumps(conversation(1)) + '\n{"id": "c"}\n{"id": "e", "data": ["q", 5]}\n')
    error = unfold_error(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet")
    assert error.line() == "c.jsonl: line 2: field 'data': is missing or null."


def test_on_error_skip_also_skips_a_bad_first_line(tmp_path: Path) -> None:
    # regression: layout detection read the first record with raising rejects
    (tmp_path / "c.jsonl").write_text("not json\n" + jsonl([conversation(1)]))
    unfold(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet", "--on-error", "skip")
    (reject,) = (json.loads(line) for line in (tmp_path / "rows.rejects.jsonl").read_text().splitlines())
    assert reject["where"] == "c.jsonl: line 1"
    assert read_rows(tmp_path / "rows.parquet").height == 2


def test_layout_error_names_the_first_records_line(tmp_path: Path) -> None:
    # regression: detection was always told `line 1`
    (tmp_path / "c.jsonl").write_text('\n\n{"question": "Hi"}\n')
    error = unfold_error(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet")
    assert error.line().startswith("c.jsonl: line 3: unknown layout")


def test_only_bad_lines_with_skip_name_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text("not json\nnot json either\n")
    result = CliRunner().invoke(cli.app, ["unfold", str(tmp_path / "c.jsonl"), "-o", str(tmp_path / "rows.parquet"),
                                          "--on-error", "skip", "-q"])
    if result.exit_code == 0:  # one acceptable fix: every line in the rejects file, no rows
        assert len((tmp_path / "rows.rejects.jsonl").read_text().splitlines()) == 2
    else:  # the other: an error that names the first bad line
        assert isinstance(result.exception, UftDataError)
        assert "c.jsonl: line 1" in result.exception.line()


def test_rejects_file_holds_the_record_as_read(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(json.dumps(conversation(1)) + '\n{"id": "c", "note": "keep me"}\n')
    unfold(tmp_path / "c.jsonl", "-o", tmp_path / "rows.parquet", "--on-error", "skip")
    (reject,) = (json.loads(line) for line in (tmp_path / "rows.rejects.jsonl").read_text().splitlines())
    assert reject["record"] == {"id": "c", "note": "keep me"}
