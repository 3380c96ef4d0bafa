"""Bad inputs through the command line: exit status 2, ONE stderr line naming the file, the
line/record/row and the field, no traceback, and no output (nor partial output) left behind.

The table runs the console entry point `uftdata.cli.main` in-process (argv, cwd and the standard
streams swapped): a subprocess costs most of a second of imports per case, which would make this
table the slowest file of the suite. Two tests at the end run the real `uftdata` script and
`python -m uftdata.cli` in a subprocess, so the entry point itself is covered too.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest

from uftdata import cli
from uftdata.errors import UftDataError, UftError, error_line
from uftdata.failures import console_failures

GOOD = json.dumps({"id": "a", "data": ["How do I boil an egg?", "Nine minutes in boiling water."]})
HH = json.dumps({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."})


def text(body: str) -> Callable[[Path], None]:
    return lambda path: path.write_text(body, encoding="utf-8")


def raw(body: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(body)


def gzipped(body: str) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(gzip.compress(body.encode("utf-8"), mtime=0))


def parquet(frame: pl.DataFrame) -> Callable[[Path], None]:
    return lambda path: frame.write_parquet(path)


def folder(files: dict[str, str]) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.mkdir()
        for name, body in files.items():
            (path / name).write_text(body, encoding="utf-8")
    return make


@dataclass(frozen=True)
class Case:
    name: str  # the input's file name; `make` creates it (None: the input does not exist)
    make: Callable[[Path], None] | None
    expected: tuple[str, ...]  # substrings of the one stderr line, in order
    args: tuple[str, ...] = ()
    extra_inputs: tuple[str, ...] = field(default=())


CASES: dict[str, Case] = {
    "not_json": Case("c.jsonl", text(f"{GOOD}\nnot json\n"), ("c.jsonl: line 2: ", "is not JSON")),
    "not_an_object": Case("c.jsonl", text(f"{GOOD}\n[1, 2]\n"), ("c.jsonl: line 2: ", "is not a JSON object", "'list'")),
    "missing_field": Case("c.jsonl", text(f'{GOOD}\n{{"id": "b"}}\n'),
                          ("c.jsonl: line 2: field 'data': ", "is missing or null")),
    "null_field": Case("c.jsonl", text(f'{GOOD}\n{{"id": "b", "data": null}}\n'),
                       ("c.jsonl: line 2: field 'data': ", "is missing or null")),
    "mistyped_field": Case("c.jsonl", text(f'{GOOD}\n{{"id": "b", "data": ["Hi", 5]}}\n'),
                           ("c.jsonl: line 2: field 'data': ", "has the wrong type", "expected list<item: string>")),
    "mistyped_id": Case("c.jsonl", text(f'{GOOD}\n{{"id": 5, "data": ["Hi", "Yo"]}}\n'),
                        ("c.jsonl: line 2: field 'id': ", "has the wrong type", "expected string")),
    "mistyped_message": Case("c.jsonl", text(
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'
        '{"messages": [{"role": "user", "content": 42}]}\n'),
        ("c.jsonl: line 2: field 'messages': ", "has the wrong type")),
    "unknown_layout": Case("c.jsonl", text('{"question": "Hi", "answer": "Yo"}\n'),
                           ("c.jsonl: line 1: ", "unknown layout", "ultrachat, sharegpt, messages", "--format")),
    # binary (prompt, completion, label) and binary_messages (messages, label) share detection step 2
    "ambiguous_layout": Case("c.jsonl", text(json.dumps({
        "prompt": "Hi", "completion": "Yo", "label": True,
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}) + "\n"),
        ("c.jsonl: line 1: ", "ambiguous layout", "'binary', 'binary_messages'", "--format")),
    "other_command_layout": Case("c.jsonl", text(HH + "\n"),
                                 ("c.jsonl: line 1: ", "does not read this layout", "hh_rlhf", "uftdata feedback")),
    "unknown_format": Case("c.jsonl", text(GOOD + "\n"), ("--format: ", "unknown layout", "'nope'", "ultrachat"),
                           args=("--format", "nope")),
    "format_missing_field": Case("c.jsonl", text(GOOD + "\n"),
                                 ("c.jsonl: line 1: field 'conversations': ", "is missing for --format sharegpt"),
                                 args=("--format", "sharegpt")),
    "empty_file": Case("c.jsonl", text(""), ("c.jsonl: ", "file holds no records")),
    "only_blank_lines": Case("c.jsonl", text("\n  \n\n"), ("c.jsonl: ", "file holds no records")),
    "invalid_utf8": Case("c.jsonl", raw(GOOD.encode() + b'\n{"id": "b", "data": ["caf\xe9", "Yo"]}\n'),
                         ("c.jsonl: line 2: ", "is not valid UTF-8")),
    "no_such_file": Case("missing.jsonl", None, ("missing.jsonl: ", "no such file or folder")),
    "unsupported_extension": Case("c.txt", text(GOOD + "\n"), ("c.txt: ", "unsupported file type", "'.txt'", ".jsonl")),
    "empty_folder": Case("d", folder({"notes.txt": "hello"}), ("d: ", "folder holds no .jsonl")),
    "bad_line_after_blank_lines": Case("c.jsonl", text(f"\n{GOOD}\n\n\n{GOOD}\n{{oops\n{GOOD}\n"),
                                       ("c.jsonl: line 6: ", "is not JSON")),
    "gzip_bad_line": Case("c.jsonl.gz", gzipped(f"{GOOD}\n{GOOD}\nnot json\n"), ("c.jsonl.gz: line 3: ", "is not JSON")),
    "json_array_missing_field": Case("c.json", text(f'[{GOOD}, {{"id": "b"}}]'),
                                     ("c.json: record 2: field 'data': ", "is missing or null")),
    "json_array_mistyped_field": Case("c.json", text(f'[{GOOD}, {{"id": "b", "data": 5}}]'),
                                      ("c.json: record 2: field 'data': ", "has the wrong type", "(got 5)")),
    "json_array_not_objects": Case("c.json", text("[1, 2]"), ("c.json: record 1: ", "is not a JSON object")),
    "json_array_truncated": Case("c.json", text(f"[\n{GOOD},\n"), ("c.json: line 3: ", "is not JSON")),
    "parquet_null_field": Case("c.parquet", parquet(pl.DataFrame({"data": [["Hi", "Yo"], None]})),
                               ("c.parquet: row 1: field 'data': ", "is missing or null")),
    "parquet_mistyped_column": Case("c.parquet", parquet(pl.DataFrame({"data": ["Hi", "Yo"]})),
                                    ("c.parquet: ", "column 'data' has the wrong type", "expected list<item: string>")),
    "not_parquet": Case("c.parquet", text(GOOD + "\n"), ("c.parquet: ", "is not a Parquet file")),
    "second_input_bad": Case("c.jsonl", text(GOOD + "\n"), ("e.jsonl: line 1: ", "unknown layout"),
                             extra_inputs=("e.jsonl",)),
    # regression: pyarrow would split the string into a list of one-letter messages
    "data_is_a_string": Case("c.jsonl", text(f'{GOOD}\n{{"id": "b", "data": "Hi there"}}\n'),
                             ("c.jsonl: line 2: field 'data': ", "has the wrong type")),
    "id_is_a_bool": Case("c.jsonl", text(f'{GOOD}\n{{"id": true, "data": ["Hi", "Yo"]}}\n'),
                         ("c.jsonl: line 2: field 'id': ", "has the wrong type")),
    "message_is_a_string": Case("c.jsonl", text(
        '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'
        '{"messages": "Hi"}\n'), ("c.jsonl: line 2: field 'messages': ", "has the wrong type")),
    "missing_field_before_mistyped": Case("c.jsonl", text(f'{GOOD}\n{{"id": "b"}}\n{{"id": "c", "data": [1]}}\n'),
                                          ("c.jsonl: line 2: field 'data': ", "is missing or null")),
}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    out_dir_listing: list[str]


def run_main(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """`uftdata ARGV` in-process, as the console script runs it: (exit status, stdout, stderr).
    Any exception other than SystemExit propagates: it would be a traceback for the user."""
    stdout, stderr = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, Path.cwd()
    sys.argv = ["uftdata", *argv]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code, stdout.getvalue(), stderr.getvalue()


def run_case(root: Path, name: str, case: Case) -> Outcome:
    work = root / name
    (work / "out").mkdir(parents=True)
    if case.make is not None:
        case.make(work / case.name)
    (work / "e.jsonl").write_text('{"question": "Hi"}\n', encoding="utf-8")
    inputs = [case.name, *case.extra_inputs]
    code, stdout, stderr = run_main(["unfold", *inputs, "-o", "out/rows.parquet", "--quiet", *case.args], work)
    return Outcome(code, stdout, stderr, sorted(os.listdir(work / "out")))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("cli_errors")
    return {name: run_case(root, name, case) for name, case in CASES.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    assert outcome.returncode == 2, outcome.stdout + outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, outcome.stderr
    (line,) = lines
    assert line.startswith("uftdata: error: ")
    assert "Traceback" not in line
    position = 0
    for part in CASES[name].expected:  # in order: file, position, field, then what is wrong
        found = line.find(part, position)
        assert found >= 0, f"{part!r} not in {line!r} after column {position}"
        position = found + len(part)
    assert outcome.stdout == ""
    assert outcome.out_dir_listing == [], "no output file and no *.partial file may be left behind"


def test_console_script_reports_one_line(tmp_path: Path) -> None:
    script = shutil.which("uftdata") or str(Path(sys.executable).with_name("uftdata"))
    if not Path(script).exists():
        pytest.skip("the `uftdata` console script is not installed")
    (tmp_path / "c.jsonl").write_text(f"{GOOD}\nnot json\n", encoding="utf-8")
    proc = subprocess.run([script, "unfold", "c.jsonl", "-o", "rows.parquet"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["uftdata: error: c.jsonl: line 2: is not JSON (Expecting value at column 1)."]
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl"]


def test_python_m_reports_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text(f'{GOOD}\n{{"id": "b"}}\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "uftdata.cli", "unfold", "c.jsonl", "-o", "out/rows.parquet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["uftdata: error: c.jsonl: line 2: field 'data': is missing or null."]
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl", "out"]
    assert os.listdir(tmp_path / "out") == []


# --- one base class, one formatter, one console handler for both entry points -----------------------


def test_error_line_is_the_one_format() -> None:
    assert error_line("f.yaml: loss.beta", "must be positive", got=-1.0, expected="a number > 0", fix="Set it.") == \
        "f.yaml: loss.beta: must be positive (got -1.0); expected a number > 0. Set it."
    assert error_line("k", "is set", got=None) == "k: is set (got null)."  # null is a value; Ellipsis is none
    assert error_line("k", "unknown key; did you mean lora.r?") == "k: unknown key; did you mean lora.r?"
    assert error_line("k", "two\nlines", got="x" * 100).endswith(f"(got '{'x' * 79}...).")
    assert "\n" not in error_line("k", "two\nlines")
    assert UftDataError("k", "bad", got=None).line() == "k: bad."  # got=None: nothing to show


def test_data_and_trainer_errors_share_the_base() -> None:
    from uft_train.errors import TrainError

    assert issubclass(UftDataError, UftError) and issubclass(TrainError, UftError)
    assert not issubclass(TrainError, UftDataError)
    assert TrainError("train.device: cuda", "no cuda device", fix="Set train.device=cpu.").line() == \
        "train.device: cuda: no cuda device. Set train.device=cpu."


class _TwoProblems(UftDataError):
    """Like a recipe's error: one line per problem."""

    def line(self) -> str:
        return "a: first.\nb: second."


def _train_error() -> UftError:
    from uft_train.errors import TrainError

    return TrainError("step 3", "the loss is not finite", got=float("nan"))


@pytest.mark.parametrize("prog", ["uftdata", "uft-train"])
@pytest.mark.parametrize(("make", "lines"), [
    (_train_error, ["step 3: the loss is not finite (got nan)."]),
    (lambda: _TwoProblems("x", "y"), ["a: first.", "b: second."]),
], ids=["trainer", "multi_line"])
def test_console_prints_each_line_of_any_uft_error(prog: str, make: Callable[[], UftError], lines: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_, console_failures(prog):
        raise make()
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"{prog}: error: {line}" for line in lines]
