"""User errors, I/O failures and Ctrl-C as one line, for both console entry points (`uftdata`, `uft-train`).

A `UftError` is printed as `PROG: error: <its line>` (one per line of a multi-problem error), exit 2.
A full disk, a read-only folder or a denied permission is the user's environment, not a bug: one line
naming the path, the errno's name and a fix, exit 2. Ctrl-C: one line, exit 130 (128 + SIGINT). In
both cases `atomic_path` has already removed the partial output while the exception unwound.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

from uftdata.errors import UftError

INTERRUPTED = "interrupted; nothing half-written was kept"
_FIXES = {
    errno.ENOSPC: "Free some space on that disk, or write elsewhere.",
    errno.EDQUOT: "The disk quota is used up; free some space, or write elsewhere.",
    errno.EFBIG: "The file system cannot hold a file this large; write elsewhere.",
    errno.EROFS: "That file system is mounted read-only; write elsewhere.",
    errno.EACCES: "Check the permissions of that path, or write elsewhere.",
    errno.EPERM: "Check the permissions of that path, or write elsewhere.",
    errno.ENOENT: "Check the path.",
}


class Interrupted(BaseException):
    """Ctrl-C, raised by our SIGINT handler instead of KeyboardInterrupt: typer turns a
    KeyboardInterrupt into a silent `exit 130`, and this line should be ours. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it and every `finally` still runs."""


def os_error(error: OSError) -> UftError:
    """`PATH: <what> (ENAME). <fix>`; `atomic_path` has put the output's name on errors about it."""
    writing = getattr(error, "writing", None)
    if error.filename is not None:
        where = str(error.filename)
    elif writing:
        where = f"{writing} (while writing it)"
    else:
        where = "a file being read or written"
    if error.filename2 is not None:
        where += f" -> {error.filename2}"
    code = error.errno or 0  # 0: no errno (not in errno.errorcode)
    what = os.strerror(code) if code else (error.strerror or str(error) or type(error).__name__)
    what = what[:1].lower() + what[1:]
    if code in errno.errorcode:
        what += f" ({errno.errorcode[code]})"
    return UftError(where, what, fix=_FIXES.get(code, ""))


@contextmanager
def console_failures(prog: str) -> Iterator[None]:
    """Run a command: a UftError or an OSError is one line and exit 2, Ctrl-C one line and exit 130."""
    with _sigint_raises_interrupted():
        try:
            yield
        except UftError as error:
            _failed(prog, error)
        except OSError as error:
            _failed(prog, os_error(error))
        except (Interrupted, KeyboardInterrupt):
            _interrupted(prog)
        except SystemExit as exit_:
            if exit_.code == 130 and _caused_by_keyboard_interrupt(exit_):  # typer's silent exit 130
                _interrupted(prog)
            raise


def _failed(prog: str, error: UftError) -> NoReturn:
    for line in error.line().splitlines():
        print(f"{prog}: error: {line}", file=sys.stderr)
    sys.exit(2)


def _interrupted(prog: str) -> NoReturn:
    print(f"{prog}: {INTERRUPTED}", file=sys.stderr)
    sys.exit(130)


def _caused_by_keyboard_interrupt(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _sigint_raises_interrupted() -> Iterator[None]:
    """SIGINT raises Interrupted while the block runs (signal handlers can only be set from the main
    thread; elsewhere KeyboardInterrupt is left as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
