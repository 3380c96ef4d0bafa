"""Outputs never destroy anything (issue "Trust", items 1, 4 and 5; README "Outputs: what a command may
replace"): what unfold/score/feedback, `uft-train export` and the figures may replace, the lock, the
leftovers of killed runs, a full or read-only disk, Ctrl-C.

The `test_corpus_*` cases each check exit 2, ONE stderr line naming the path, no traceback, the inputs
untouched (a snapshot of the whole work folder) and nothing left behind.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from corpus import assert_one_line, leftovers, snapshot, uft_train, uftdata

from uftdata.accounting import Summary
from uftdata.atomic import lock_name
from uftdata.writer import written_by_uftdata

DATA = Path(__file__).resolve().parents[1] / "data"
# One input per command, its first lines: (command, data file).
COMMANDS = {"unfold": "ultrachat.jsonl", "score": "helpsteer2.jsonl", "feedback": "hh_rlhf.jsonl"}
INTERRUPTED = "interrupted; nothing half-written was kept"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py; the export tests train a tiny run


def work_folder(root: Path, command: str = "unfold", lines: int = 3) -> Path:
    """root/in.jsonl: the first `lines` records of the command's demo input."""
    root.mkdir(parents=True, exist_ok=True)
    text = (DATA / COMMANDS[command]).read_text(encoding="utf-8").splitlines()[:lines]
    (root / "in.jsonl").write_text("\n".join(text) + "\n", encoding="utf-8")
    return root


def big_input(path: Path, records: int, seed: int = 0) -> Path:
    """Ultrachat records of random words: Parquet barely compresses them, and they take a while to unfold."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(records):
            turns = [" ".join(rng.choices(words, k=30)) for _ in range(4)]
            out.write(json.dumps({"id": f"c{i}", "data": turns}) + "\n")
    return path


def refused(work: Path, argv: list[str], *parts: str, prog: str = "uftdata") -> str:
    """Run `argv` in `work`: the corpus's checks around one refused command; returns the line."""
    before = snapshot(work)
    run = uftdata if prog == "uftdata" else uft_train
    code, out, err = run(argv, work)
    line = assert_one_line(code, out, err, *parts, prog=prog)
    assert snapshot(work) == before
    assert leftovers(work) == [] or all(name.endswith(".lock") for name in leftovers(work))  # only a live lock
    return line


# --- unfold / score / feedback: -o ------------------------------------------------------------------

@pytest.mark.parametrize("command", list(COMMANDS))
def test_corpus_existing_folder_as_output_is_refused(tmp_path: Path, command: str) -> None:
    # Was: the folder and everything in it deleted, a Parquet file in its place, exit 0.
    work = work_folder(tmp_path, command)
    (work / "prepared").mkdir()
    (work / "prepared" / "notes.txt").write_text("precious")
    line = refused(work, [command, "in.jsonl", "-o", "prepared", "-q", "--overwrite"],
                   "prepared: is a folder; -o names the Parquet file to write. Give a file, e.g. -o ",
                   str(Path("prepared") / "rows.parquet"))
    assert line.endswith(".")


def test_corpus_feedback_output_is_its_own_input(tmp_path: Path) -> None:
    # Was: the input overwritten, exit 0.
    work = work_folder(tmp_path, "feedback")
    for extra in ([], ["--overwrite"]):
        refused(work, ["feedback", "in.jsonl", "-o", "in.jsonl", "-q", *extra],
                "in.jsonl: is an input of this command (in.jsonl); refusing to write over it. Choose another -o.")


def test_corpus_output_is_a_file_inside_an_input_folder(tmp_path: Path) -> None:
    # rows.parquet, an earlier output (so uftdata wrote it), is now one of the inputs found in data/.
    work = work_folder(tmp_path)
    (work / "data").mkdir()
    os.replace(work / "in.jsonl", work / "data" / "in.jsonl")
    assert uftdata(["unfold", "data/in.jsonl", "-o", "data/rows.parquet", "-q"], work)[0] == 0
    refused(work, ["unfold", "data", "-o", "data/rows.parquet", "-q", "--overwrite"],
            "data/rows.parquet: is an input of this command (data/rows.parquet); refusing to write over it")


def test_corpus_output_is_an_input_through_a_link(tmp_path: Path) -> None:
    work = work_folder(tmp_path)
    (work / "link.jsonl").symlink_to("in.jsonl")
    refused(work, ["unfold", "in.jsonl", "-o", "link.jsonl", "-q", "--overwrite"],
            "link.jsonl: is an input of this command (in.jsonl)")


@pytest.mark.parametrize("foreign", ["text", "parquet"])
def test_corpus_foreign_file_at_output_is_refused(tmp_path: Path, foreign: str) -> None:
    work = work_folder(tmp_path)
    if foreign == "text":
        (work / "rows.parquet").write_text("my notes")
    else:  # a Parquet file, but not one uftdata wrote (no summary in its footer)
        pl.DataFrame({"a": [1, 2]}).write_parquet(work / "rows.parquet")
    refused(work, ["unfold", "in.jsonl", "-o", "rows.parquet", "-q"],
            "rows.parquet: exists and was not written by uft; refusing to replace it. "
            "Pass --overwrite to replace it, or choose another -o.")


def test_own_output_is_replaced_and_overwrite_replaces_a_foreign_file(tmp_path: Path) -> None:
    work = work_folder(tmp_path, lines=2)
    assert uftdata(["unfold", "in.jsonl", "-o", "rows.parquet", "-q"], work)[0] == 0
    work_folder(tmp_path, lines=4)
    code, out, err = uftdata(["score", str(DATA / "helpsteer2.jsonl"), "-o", "rows.parquet", "-q"], work)
    assert (code, err) == (0, "")  # another command's output: uftdata wrote it, so it is replaced
    assert pq.read_table(work / "rows.parquet").column("kind").unique().to_pylist() == ["score"]

    (work / "notes.parquet").write_text("mine")
    code, out, err = uftdata(["unfold", "in.jsonl", "-o", "notes.parquet", "-q", "--overwrite"], work)
    assert (code, err) == (0, "")
    assert written_by_uftdata(work / "notes.parquet")
    assert leftovers(work) == []


def rejects_input(work: Path) -> Path:
    good = (DATA / "ultrachat.jsonl").read_text(encoding="utf-8").splitlines()[0]
    (work / "in.jsonl").write_text(f"{good}\nnot json\n", encoding="utf-8")
    return work


def test_corpus_foreign_rejects_file_is_refused_before_any_work(tmp_path: Path) -> None:
    work = rejects_input(work_folder(tmp_path))
    (work / "rows.rejects.jsonl").write_text('{"my": "log"}\n')
    refused(work, ["unfold", "in.jsonl", "-o", "rows.parquet", "-q", "--on-error", "skip"],
            "rows.rejects.jsonl: exists and was not written by uft; refusing to replace it")
    assert not (work / "rows.parquet").exists()


def test_own_rejects_file_is_replaced(tmp_path: Path) -> None:
    work = rejects_input(work_folder(tmp_path))
    argv = ["unfold", "in.jsonl", "-o", "rows.parquet", "-q", "--on-error", "skip"]
    assert uftdata(argv, work)[0] == 0
    first = (work / "rows.rejects.jsonl").read_bytes()
    code, out, err = uftdata(argv, work)
    assert (code, err) == (0, "")
    assert (work / "rows.rejects.jsonl").read_bytes() == first
    assert sorted(os.listdir(work)) == ["in.jsonl", "rows.parquet", "rows.rejects.jsonl"]


# --- the lock and the leftovers of killed runs ------------------------------------------------------

def test_corpus_second_writer_is_stopped_by_the_lock(tmp_path: Path) -> None:
    work = work_folder(tmp_path)
    # A live writer's lock: a child that sleeps, so its PID is alive for the whole test.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            lock_name(work / "rows.parquet").write_text(f"{child.pid}\n")
            refused(work, ["unfold", "in.jsonl", "-o", "rows.parquet", "-q"],
                    f"rows.parquet: another process (PID {child.pid}) is writing it. Wait for it to finish; "
                    "if no such process runs, remove ", ".rows.parquet.lock.")
        finally:
            child.kill()
    assert not (work / "rows.parquet").exists()


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)  # exited and reaped by subprocess.run


def test_leftovers_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    work = work_folder(tmp_path)
    pid = dead_pid()
    lock_name(work / "rows.parquet").write_text(f"{pid}\n")
    (work / f".rows.parquet.{pid}.partial").write_bytes(b"PAR1 half")
    assert uftdata(["unfold", "in.jsonl", "-o", "rows.parquet", "-q"], work)[0] == 0
    assert sorted(os.listdir(work)) == ["in.jsonl", "rows.parquet"]


def wait_for_partial(folder: Path, process: subprocess.Popen, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        names = [n for n in os.listdir(folder) if n.endswith(".partial")] if folder.is_dir() else []
        if names:
            return names[0]
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError("no .partial appeared")


def test_corpus_kill_9_during_unfold_leaves_no_output(tmp_path: Path) -> None:
    work = tmp_path
    big_input(work / "big.jsonl", 4000)
    before = snapshot(work)
    with subprocess.Popen([sys.executable, "-m", "uftdata.cli", "unfold", "big.jsonl", "-o", "out/rows.parquet",
                           "-q"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        partial = wait_for_partial(work / "out", process)
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sorted(os.listdir(work / "out")) == sorted([partial, ".rows.parquet.lock"])  # nothing visible
    assert {k: v for k, v in snapshot(work).items() if not k.startswith("out")} == before

    # The next run removes the dead process's partial and lock, and writes the output.
    work_folder(work)
    assert uftdata(["unfold", "in.jsonl", "-o", "out/rows.parquet", "-q"], work)[0] == 0
    assert os.listdir(work / "out") == ["rows.parquet"]


def test_ctrl_c_during_unfold_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    work = tmp_path
    big_input(work / "big.jsonl", 4000)
    before = snapshot(work)
    with subprocess.Popen([sys.executable, "-m", "uftdata.cli", "unfold", "big.jsonl", "-o", "out/rows.parquet"],
                          cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        wait_for_partial(work / "out", process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == [f"uftdata: {INTERRUPTED}"]
    assert stdout == ""
    assert os.listdir(work / "out") == []
    assert {k: v for k, v in snapshot(work).items() if k != "out"} == before


def test_ctrl_c_in_process_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGINT while the rows are written (Summary.check runs inside the output's block).
    work = work_folder(tmp_path)
    monkeypatch.setattr(Summary, "check", lambda self: signal.raise_signal(signal.SIGINT))
    code, out, err = uftdata(["unfold", "in.jsonl", "-o", "rows.parquet", "-q"], work)
    assert (code, err.splitlines()) == (130, [f"uftdata: {INTERRUPTED}"])
    assert os.listdir(work) == ["in.jsonl"]


def test_ctrl_c_under_uft_train_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uft_train import cli

    monkeypatch.setattr(cli, "dry_run", lambda *a, **k: signal.raise_signal(signal.SIGINT))
    code, out, err = uft_train(["recipe.yaml", "--dry-run"], tmp_path)
    assert (code, err.splitlines()) == (130, [f"uft-train: {INTERRUPTED}"])


# --- full and read-only disks -----------------------------------------------------------------------

@contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at `folder` (size=64k: a full disk; ro: permission denied even to root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_corpus_full_disk_is_one_line_naming_the_output(tmp_path: Path) -> None:
    big_input(tmp_path / "big.jsonl", 600)  # about 200 KB of Parquet
    with tmpfs(tmp_path / "full", "size=64k"):
        refused(tmp_path, ["unfold", "big.jsonl", "-o", "full/rows.parquet", "-q"],
                "full/rows.parquet: no space left on device (ENOSPC). Free some space on that disk, or write elsewhere.")
        assert os.listdir(tmp_path / "full") == []


def test_corpus_read_only_disk_is_one_line_naming_the_output(tmp_path: Path) -> None:
    work = work_folder(tmp_path)
    with tmpfs(work / "ro", "ro,size=64k"):
        refused(work, ["unfold", "in.jsonl", "-o", "ro/rows.parquet", "-q"],
                "ro/rows.parquet: read-only file system (EROFS). That file system is mounted read-only; write elsewhere.")


def test_corpus_os_error_without_a_file_name_is_still_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = work_folder(tmp_path)

    def fail(self: Summary) -> None:
        raise OSError(errno.EIO, "Input/output error")  # names no file, and may be about an input

    monkeypatch.setattr(Summary, "check", fail)
    refused(work, ["unfold", "in.jsonl", "-o", "rows.parquet", "-q"],
            "uftdata: error: rows.parquet (while writing it): input/output error (EIO).")
    assert os.listdir(work) == ["in.jsonl"]


# --- figures ----------------------------------------------------------------------------------------

def test_corpus_foreign_png_is_refused_and_own_pngs_are_redrawn(tmp_path: Path) -> None:
    work = work_folder(tmp_path)
    assert uftdata(["unfold", "in.jsonl", "-o", "rows.parquet", "-q"], work)[0] == 0
    code, out, err = uftdata(["inspect", "rows.parquet", "--plot", "plots"], work)
    assert code == 0, err
    drawn = snapshot(work / "plots")
    assert uftdata(["inspect", "rows.parquet", "--plot", "plots"], work)[0] == 0  # a rerun replaces its own
    assert snapshot(work / "plots") == drawn

    (work / "plots" / "scores.png").write_bytes(b"\x89PNG\r\n\x1a\n my own figure")
    refused(work, ["inspect", "rows.parquet", "--plot", "plots"],
            "plots/scores.png: exists and was not written by uft; refusing to replace it. "
            "Move it away, or draw into another folder.")


# --- uft-train export -------------------------------------------------------------------------------

def fake_run(folder: Path) -> Path:
    """Enough of a run folder for export to check its output before loading anything."""
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text("{}")
    return folder


def test_corpus_export_to_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    # Was: the folder deleted and the model written in its place, exit 0 (the README's own example).
    fake_run(tmp_path / "run")
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "notes.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):
        refused(tmp_path, ["export", "run", "-o", "exported", *extra],
                "exported: is a folder this command did not write; refusing to replace it. "
                "Choose another -o, or remove it yourself.", prog="uft-train")


def test_corpus_export_into_its_own_run_is_refused(tmp_path: Path) -> None:
    fake_run(tmp_path / "run")
    refused(tmp_path, ["export", "run/adapter/..", "-o", "run", "--overwrite"],
            "run: is an input of this command (run/adapter/..); refusing to write over it", prog="uft-train")


@pytest.fixture(scope="module")
def run_dir(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_train_loop import tiny_recipe

    from uft_train.train import train

    return train(tiny_recipe(mixture, tmp_path_factory.mktemp("run") / "run", "train.max_steps=1"))


def test_export_replaces_its_own_export_only_with_overwrite(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    code, stdout, err = uft_train(["export", str(run_dir), "-o", str(out)], tmp_path)
    assert (code, err) == (0, "")  # no progress bar off a terminal
    marker = json.loads((out / "uft_export.json").read_text())
    assert marker["run_dir"] == str(run_dir) and marker["base_model"] == "tiny"
    assert len(marker["adapter_sha256"]) == 64
    # Exported weights are readable by others (safetensors writes 0600), folders 0755-ish.
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert modes == {name: (0o777 if name == "exported" else 0o666) & ~mask for name in modes}, modes

    before = snapshot(out)
    line = refused(tmp_path, ["export", str(run_dir), "-o", str(out)],
                   f"{out}: already exists. Pass --overwrite to replace this earlier export, or choose another -o.",
                   prog="uft-train")
    assert line
    code, stdout, err = uft_train(["export", str(run_dir), "-o", str(out), "--overwrite"], tmp_path)
    assert (code, err) == (0, "")
    assert snapshot(out) == before  # the same run exports the same bytes
    assert leftovers(tmp_path) == []


def test_corpus_export_to_a_read_only_disk_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=64k"):
        refused(tmp_path, ["export", str(run_dir), "-o", "ro/exported"],
                "ro/exported: read-only file system (EROFS).", prog="uft-train")


def test_corpus_export_to_a_full_disk_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    # safetensors reports a full disk as a SafetensorError, not an OSError: still one line.
    with tmpfs(tmp_path / "full", "size=64k"):
        refused(tmp_path, ["export", str(run_dir), "-o", "full/exported"],
                "full/exported: no space left on device (ENOSPC). Free some space on that disk, or write elsewhere.",
                prog="uft-train")
        assert os.listdir(tmp_path / "full") == []


def test_corpus_kill_9_during_mix_leaves_no_mixture(tmp_path: Path) -> None:
    work = tmp_path
    big_input(work / "big.jsonl", 4000)
    assert uftdata(["unfold", "big.jsonl", "-o", "rows.parquet", "-q"], work)[0] == 0
    before = snapshot(work)
    with subprocess.Popen([sys.executable, "-m", "uftdata.cli", "mix", "--take", "rows.parquet=all",
                           "--test", "rows.parquet=0.1", "-o", "mixes/m", "-q"], cwd=work,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        partial = wait_for_partial(work / "mixes", process)
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sorted(os.listdir(work / "mixes")) == sorted([partial, ".m.lock"])  # no mixture anyone would read
    assert {k: v for k, v in snapshot(work).items() if not k.startswith("mixes")} == before

    # The next mix removes the dead process's partial folder and lock, and writes the mixture.
    assert uftdata(["mix", "--take", "rows.parquet=all", "--test", "rows.parquet=0.1", "-o", "mixes/m", "-q"],
                   work)[0] == 0
    assert os.listdir(work / "mixes") == ["m"]
    assert (work / "mixes" / "m" / "manifest.json").is_file()
