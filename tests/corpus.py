"""The bad-input corpus's harness (issue "Trust"): run a console entry point in-process and check
what a user sees: exit status 2, ONE stderr line naming the path (and line/row/field), no
traceback, inputs untouched and nothing left behind.

In-process, because a subprocess costs most of a second of imports per case. Tests that need a
real process (kill -9, Ctrl-C) use `subprocess` themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def run_entry(main: Callable[[], None] | Callable[[list[str]], None], prog: str, argv: Sequence[str],
              cwd: Path) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `main` run as `prog argv...` in `cwd`.

    Any exception other than SystemExit propagates: it would be a traceback for the user."""
    stdout, stderr = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, Path.cwd()
    sys.argv = [prog, *argv]
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code, stdout.getvalue(), stderr.getvalue()


def uftdata(argv: Sequence[str], cwd: Path) -> tuple[int, str, str]:
    from uftdata import cli

    return run_entry(cli.main, "uftdata", argv, cwd)


def uft_train(argv: Sequence[str], cwd: Path) -> tuple[int, str, str]:
    from uft_train import cli

    return run_entry(lambda: cli.main(list(argv)), "uft-train", argv, cwd)


def assert_one_line(code: int, stdout: str, stderr: str, *parts: str, prog: str = "uftdata") -> str:
    """Exit 2 and one stderr line `PROG: error: ...` holding `parts` in order; returns the line."""
    assert code == 2, f"exit {code}\nstdout: {stdout}\nstderr: {stderr}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    (line,) = lines
    assert line.startswith(f"{prog}: error: "), line
    assert "Traceback" not in stderr
    position = 0
    for part in parts:
        found = line.find(part, position)
        assert found >= 0, f"{part!r} not in {line!r} after column {position}"
        position = found + len(part)
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes; folders -> "<dir>"."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = "<dir>"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Hidden partial outputs (`.NAME.PID.partial`, `.NAME.PID.old`, locks) anywhere under `folder`."""
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, dirs, files in os.walk(folder) for name in dirs + files
                  if name.endswith((".partial", ".old", ".lock")))
