"""Outputs appear complete or not at all (uftdata/atomic.py, writer.open_rows, the CLI)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from corpus import leftovers, snapshot
from typer.testing import CliRunner

from uftdata import cli, schema
from uftdata.atomic import atomic_path, give_normal_modes, lock_name, partial_name
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
    # Was: replaced by default. Now only with overwrite (or when `owned` says uft wrote it).
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(Boom), atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("new but broken")
        raise Boom
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]

    with atomic_path(target, overwrite=True) as tmp:
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
    # Was: any folder replaced by default. Now only a folder `owned` recognises, and with overwrite.
    target = tmp_path / "mix"
    target.mkdir()
    (target / "old.parquet").write_text("old")

    with pytest.raises(Boom), atomic_path(target, overwrite=True, owned=ours) as tmp:
        tmp.mkdir()
        (tmp / "new.parquet").write_text("broken")
        raise Boom
    assert listing(target) == ["old.parquet"]
    assert listing(tmp_path) == ["mix"]

    with atomic_path(target, overwrite=True, owned=ours) as tmp:
        tmp.mkdir()
        (tmp / "new.parquet").write_text("new")
    assert listing(target) == ["new.parquet"]
    assert listing(tmp_path) == ["mix"]  # the old folder, moved aside, is gone


def test_folder_output_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "mix"
    target.mkdir()
    (target / "old.parquet").write_text("old")
    with pytest.raises(UftDataError, match="mix: already exists. Pass --overwrite"), \
            atomic_path(target, owned=ours) as tmp:
        tmp.mkdir()
    assert listing(tmp_path) == ["mix"]
    assert listing(target) == ["old.parquet"]


def ours(path: Path) -> bool:
    """The test's marker of an output "the command wrote"."""
    return path.is_dir() or path.read_text().startswith("ours")


# ---------------------------------------------------------------------------------------------
# What may be replaced (check_output) and the lock


def test_default_refuses_an_existing_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "keep.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(UftDataError) as info, atomic_path(tmp_path / "notes.txt") as tmp:
        tmp.write_text("x")
    assert info.value.line() == (f"{tmp_path / 'notes.txt'}: exists and was not written by uft; refusing to "
                                 "replace it. Pass --overwrite to replace it, or choose another -o.")
    with pytest.raises(UftDataError, match="is a folder this command did not write; refusing to replace it"), \
            atomic_path(tmp_path / "folder", overwrite=True) as tmp:  # overwrite alone is not enough
        tmp.mkdir()
    assert snapshot(tmp_path) == before


def test_owned_file_is_replaced_and_foreign_file_needs_overwrite(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine.txt", tmp_path / "theirs.txt"
    mine.write_text("ours v1")
    theirs.write_text("theirs")
    with atomic_path(mine, owned=ours) as tmp:
        tmp.write_text("ours v2")
    assert mine.read_text() == "ours v2"
    with pytest.raises(UftDataError, match="theirs.txt: exists and was not written by uft"), \
            atomic_path(theirs, owned=ours) as tmp:
        tmp.write_text("x")
    with atomic_path(theirs, owned=ours, overwrite=True) as tmp:
        tmp.write_text("ours")
    assert theirs.read_text() == "ours"
    assert listing(tmp_path) == ["mine.txt", "theirs.txt"]


def test_empty_folder_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with atomic_path(tmp_path / "out") as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("a")
    assert listing(tmp_path / "out") == ["a"]


def test_an_input_is_never_an_output(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("data")
    (tmp_path / "link.jsonl").symlink_to(source)
    os.link(source, tmp_path / "hard.jsonl")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x.jsonl").write_text("data")
    before = snapshot(tmp_path)
    for out, inputs in [(source, [source]), (tmp_path / "link.jsonl", [source]), (tmp_path / "hard.jsonl", [source]),
                        (tmp_path / "sub" / ".." / "in.jsonl", [source]),
                        (tmp_path / "folder", [tmp_path / "folder" / "x.jsonl"])]:
        with pytest.raises(UftDataError, match="an input of this command"), \
                atomic_path(out, overwrite=True, owned=lambda p: True, inputs=inputs) as tmp:
            tmp.write_text("x")
    assert snapshot(tmp_path) == before
    assert leftovers(tmp_path) == []


def test_a_second_writer_is_stopped_by_the_lock(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert lock_name(target).read_text() == f"{os.getpid()}\n"
        tmp.write_text("first")
        with pytest.raises(UftDataError) as info, atomic_path(target) as tmp2:
            tmp2.write_text("second")
    assert info.value.line() == (f"{target}: another process (PID {os.getpid()}) is writing it. Wait for it to "
                                 f"finish; if no such process runs, remove {lock_name(target)}.")
    assert target.read_text() == "first"
    assert listing(tmp_path) == ["out.txt"]  # the lock is gone


def dead_pid() -> int:
    """The PID of a child that has exited and been reaped: no process has it (until reused)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                           check=True)
    return int(child.stdout)


def test_leftovers_of_a_dead_process_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    target.write_text("ours v1")  # present, so the dead process's `.old` is not put back but removed
    pid = dead_pid()
    lock_name(target).write_text(f"{pid}\n")
    (tmp_path / f".out.parquet.{pid}.partial").write_text("half")
    (tmp_path / f".out.parquet.{pid}.old").mkdir()
    (tmp_path / f".out.parquet.{pid}.old" / "x").write_text("old")
    live = tmp_path / f".out.parquet.{os.getppid()}.partial"  # a live process's: left alone
    live.write_text("someone else's")
    unrelated = tmp_path / f".other.parquet.{pid}.partial"  # another output's: not ours to clear here
    unrelated.write_text("other")
    with atomic_path(target, owned=ours) as tmp:
        tmp.write_text("ours v2")
    assert listing(tmp_path) == sorted([live.name, unrelated.name, "out.parquet"])
    assert target.read_text() == "ours v2"


def test_an_old_folder_cut_between_its_renames_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "mix"
    old = tmp_path / f".mix.{dead_pid()}.old"
    old.mkdir()
    (old / "manifest.json").write_text("{}")
    # The dead process moved the previous output aside and died before the new one went in: a new
    # writer finds the previous output back in place, and replaces it only by the rules.
    with pytest.raises(UftDataError, match="already exists"), atomic_path(target, owned=ours) as tmp:
        tmp.mkdir()
    assert listing(tmp_path) == ["mix"] and listing(target) == ["manifest.json"]


def test_interrupt_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt
    assert listing(tmp_path) == []


def test_an_empty_block_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "out.txt").write_text("ours before")
    with atomic_path(tmp_path / "out.txt", owned=ours):
        pass
    assert (tmp_path / "out.txt").read_text() == "ours before"
    assert listing(tmp_path) == ["out.txt"]


def test_a_link_is_replaced_never_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with atomic_path(tmp_path / "link", overwrite=True, owned=lambda p: True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert listing(tmp_path / "real") == ["keep.txt"]  # the link's target is untouched
    assert not (tmp_path / "link").is_symlink() and listing(tmp_path / "link") == ["new.txt"]


def test_full_disk_names_the_output(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as info, atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")  # as pyarrow raises it: no file name
    assert info.value.filename == str(target)
    assert listing(tmp_path) == []


def test_give_normal_modes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "w.safetensors").write_bytes(b"x")
    os.chmod(tmp_path / "d" / "w.safetensors", 0o600)
    mask = os.umask(0o022)
    try:
        give_normal_modes(tmp_path / "d")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "d" / "w.safetensors").stat().st_mode) == 0o644


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
    with open_rows(out, {"uft.summary": "{}"}) as writer:  # a file uftdata wrote: it may be replaced
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
    # The hidden partial file and the dead writer's lock (was: only the partial; there was no lock).
    assert names == [f".rows.parquet.{int(lock_name(tmp_path / 'rows.parquet').read_text())}.partial",
                     ".rows.parquet.lock"]
    # The next writer removes both: the lock's process is dead.
    with open_rows(tmp_path / "rows.parquet") as writer:
        writer.write(rows(1))
    assert listing(tmp_path) == ["rows.parquet"]
