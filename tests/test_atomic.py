"""Outputs appear complete or not at all (uftdata/atomic.py, writer.open_rows, the CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from uftdata import cli, schema
from uftdata.atomic import atomic_path, partial_name
from uftdata.errors import UftDataError
from uftdata.writer import open_rows


class Boom(Exception):
    pass


def listing(folder: Path) -> list[str]:
    """Every entry, hidden ones included: a `.NAME.PID.partial` leftover must show up."""
    return sorted(os.listdir(folder))


def test_partial_name_is_a_hidden_sibling(tmp_path: Path) -> None:
    tmp = partial_name(tmp_path / "rows.parquet")
    assert tmp.parent == tmp_path
    assert tmp.name == f".rows.parquet.{os.getpid()}.partial"


def test_success_writes_the_file_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "deep/er/out.txt"  # missing parent folders are created
    with atomic_path(target) as tmp:
        tmp.write_text("done")
        assert not target.exists(), "the output must not appear before the block completes"
    assert target.read_text() == "done"
    assert listing(target.parent) == ["out.txt"]


def test_failure_leaves_neither_output_nor_partial(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert listing(tmp_path) == []


def test_existing_output_is_replaced_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("new but broken")
        raise Boom
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]

    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert listing(tmp_path) == ["out.txt"]


def test_stale_partial_of_a_killed_run_is_cleared(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    partial_name(target).write_text("leftover")
    with atomic_path(target) as tmp:
        assert not tmp.exists()
        tmp.write_text("fresh")
    assert listing(tmp_path) == ["out.txt"]


def test_folder_output(tmp_path: Path) -> None:
    target = tmp_path / "mix"
    target.mkdir()
    (target / "old.parquet").write_text("old")

    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.parquet").write_text("broken")
        raise Boom
    assert listing(target) == ["old.parquet"]
    assert listing(tmp_path) == ["mix"]

    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.parquet").write_text("new")
    assert listing(target) == ["new.parquet"]
    assert listing(tmp_path) == ["mix"]  # the old folder, moved aside, is gone


def test_folder_output_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "mix"
    target.mkdir()
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False) as tmp:
        tmp.mkdir()
    assert listing(tmp_path) == ["mix"]
    assert listing(target) == []


# ---------------------------------------------------------------------------------------------
# The Parquet writer


def rows(n: int) -> pl.DataFrame:
    frame = pl.DataFrame({
        "id": [f"{i:032x}" for i in range(n)],
        "prompt": [[{"role": "user", "content": f"q{i}"}] for i in range(n)],
        "completion": [[{"role": "assistant", "content": f"a{i}"}] for i in range(n)],
        "score": [1.0] * n, "kind": ["sft"] * n, "label": [None] * n, "pair_id": [None] * n,
        "source": ["t"] * n, "source_id": [f"t:{i}" for i in range(n)], "group": [f"{i:032x}" for i in range(n)],
        "turn": [0] * n, "attributes": [None] * n,
    }, schema=schema.POLARS_SCHEMA)
    return frame


def test_open_rows_writes_schema_and_metadata(tmp_path: Path) -> None:
    metadata: dict[str, str] = {}
    with open_rows(tmp_path / "rows.parquet", metadata) as writer:
        writer.write(rows(3))
        writer.write(rows(0))
        metadata["uft.summary"] = json.dumps({"rows_out": 3})  # filled in late, read at close
    assert writer.rows == 3
    file = pq.ParquetFile(tmp_path / "rows.parquet")
    assert file.schema_arrow.equals(schema.SCHEMA)
    assert file.metadata.metadata[b"uft.summary"] == b'{"rows_out": 3}'
    assert listing(tmp_path) == ["rows.parquet"]


def test_open_rows_failure_leaves_old_output(tmp_path: Path) -> None:
    out = tmp_path / "rows.parquet"
    with open_rows(out) as writer:
        writer.write(rows(2))
    before = out.read_bytes()
    with pytest.raises(Boom), open_rows(out) as writer:
        writer.write(rows(5))
        raise Boom
    assert out.read_bytes() == before
    assert listing(tmp_path) == ["rows.parquet"]


def test_open_rows_failing_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Exception), open_rows(tmp_path / "rows.parquet") as writer:  # noqa: B017
        writer.write(rows(2).drop("group"))  # not in the schema: the write itself fails
    assert listing(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Through the command


def test_cli_failure_keeps_the_previous_output(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "data": ["Hi", "Hello"]})
    (tmp_path / "good.jsonl").write_text(good + "\n")
    (tmp_path / "bad.jsonl").write_text(good + "\n" * 3 + good + "\nnot json\n")
    out = tmp_path / "out/rows.parquet"
    runner = CliRunner()
    assert runner.invoke(cli.app, ["unfold", str(tmp_path / "good.jsonl"), "-o", str(out), "-q"]).exit_code == 0
    before = out.read_bytes()

    result = runner.invoke(cli.app, ["unfold", str(tmp_path / "bad.jsonl"), "-o", str(out), "-q"])
    assert isinstance(result.exception, UftDataError)
    assert result.exception.line() == "bad.jsonl: line 5: is not JSON (Expecting value at column 1)."
    assert out.read_bytes() == before
    assert listing(out.parent) == ["rows.parquet"]


def test_a_killed_writer_leaves_no_output(tmp_path: Path) -> None:
    # SIGKILL runs no cleanup: the output must still never appear, only the hidden partial file.
    import signal
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from uftdata.rows import build_rows\n"
        "from uftdata.writer import open_rows\n"
        "row = {'prompt': [{'role': 'user', 'content': 'q'}], 'completion': {'role': 'assistant', 'content': 'a'},\n"
        "       'score': 1.0, 'kind': 'sft', 'label': None, 'pair': None, 'source_id': 'x:1', 'attributes': None}\n"
        "with open_rows(Path(sys.argv[1])) as writer:\n"
        "    writer.write(build_rows([row] * 6000, source='s'))\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "rows.parquet")], check=False)
    assert done.returncode == -signal.SIGKILL
    names = listing(tmp_path)
    assert "rows.parquet" not in names
    assert len(names) == 1 and names[0].startswith(".rows.parquet.") and names[0].endswith(".partial")
