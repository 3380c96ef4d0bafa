"""Outputs appear complete or not at all, and replace nothing they should not (README, "Outputs: what a
command may replace"). Every command writes through `atomic_path`; `check_output` is its refusal rule.

- An output that is (or, as a folder, holds) one of the command's inputs is always refused.
- A missing output, or an empty folder, is written.
- An existing folder is replaced only with `overwrite` and when `owned(path)` says the command wrote it
  (its marker file); an existing file with `overwrite` or when `owned(path)` (e.g. its Parquet footer).
- `.NAME.lock` (created with O_EXCL, holding the writer's PID) stops a second concurrent writer with one
  line; a lock whose process is dead is stale and removed.
- The block writes a hidden sibling `.NAME.PID.partial`, renamed over `path` when the block succeeds and
  removed on any exception, Ctrl-C included. A later writer of `path` removes the `.NAME.PID.partial`
  and `.NAME.PID.old` leftovers of dead processes (kill -9 runs no cleanup).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from uftdata.errors import UftDataError

Owned = Callable[[Path], bool]
REPLACE_FIX = "Pass --overwrite to replace it, or choose another -o."
# Failures that are about the output even when the error names no file (pyarrow's and write()'s do not).
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
# A lock is created empty and its PID written at once: an empty one is read again for this long before
# it counts as the leftover of a process killed between the two.
_EMPTY_LOCK_WAIT_S = 1.0


def partial_name(path: Path) -> Path:
    # Same folder, so the final rename is atomic; hidden and suffixed so a killed run's leftover is
    # recognisable (and ignored by `.gitignore` and by our folder scans).
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def old_name(path: Path) -> Path:
    """Where a replaced folder waits, between the two renames, until the new one is in place."""
    return path.with_name(f".{path.name}.{os.getpid()}.old")


def lock_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextmanager
def atomic_path(path: Path, *, overwrite: bool = False, owned: Owned | None = None,
                inputs: Iterable[Path] = (), fix: str = REPLACE_FIX) -> Iterator[Path]:
    """Yield a hidden temporary sibling of `path` (write a file or a folder there); it replaces `path`
    when the block completes, if `check_output` allows. A block that creates nothing there leaves
    `path` as it was. `fix` is the advice given when an existing output is refused."""
    path = Path(path)
    inputs = list(inputs)
    check_output(path, overwrite=overwrite, owned=owned, inputs=inputs, fix=fix)  # before touching anything
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        _clear_leftovers(path)
        # Again under the lock: the leftovers may have put a previous output back, or a writer that
        # finished meanwhile may have created one.
        check_output(path, overwrite=overwrite, owned=owned, inputs=inputs, fix=fix)
        tmp = partial_name(path)
        try:
            yield tmp
            if os.path.lexists(tmp):
                _install(tmp, path)
        except OSError as error:
            _name_output(error, path, tmp)
            raise
        finally:
            _remove(tmp)


def check_output(path: Path, *, overwrite: bool = False, owned: Owned | None = None,
                 inputs: Iterable[Path] = (), fix: str = REPLACE_FIX) -> None:
    """Raise UftDataError unless `path` may be written (see the module's rules); touches nothing."""
    path = Path(path)
    _refuse_inputs(path, inputs)
    if not os.path.lexists(path) or _is_empty_folder(path):
        return
    if path.is_dir():
        if owned is None or not owned(path):
            raise UftDataError(str(path), "is a folder this command did not write; refusing to replace it",
                               fix="Choose another -o, or remove it yourself.")
        if not overwrite:
            raise UftDataError(str(path), "already exists", fix=fix)
    elif not overwrite and (owned is None or not owned(path)):
        raise UftDataError(str(path), "exists and was not written by uft; refusing to replace it", fix=fix)


def _refuse_inputs(path: Path, inputs: Iterable[Path]) -> None:
    """Same real path (symlinks resolved; hard links too when both exist), or a folder holding an input."""
    target = os.path.realpath(path)
    for source in inputs:
        real = os.path.realpath(source)
        if real == target or real.startswith(target.rstrip(os.sep) + os.sep) or _same_file(path, Path(source)):
            raise UftDataError(str(path), f"is {'' if real == target else 'a folder holding '}an input of this "
                               f"command ({source}); refusing to write over it", fix="Choose another -o.")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_empty_folder(path: Path) -> bool:
    """Nothing to lose: an empty folder (not a link to one) counts as a missing output."""
    if path.is_symlink() or not path.is_dir():
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is None


def _install(tmp: Path, path: Path) -> None:
    """Put `tmp` at `path`: one atomic rename over a file; a folder (or a change of kind) goes through
    `.NAME.PID.old`, which a later run puts back if this process dies between the two renames."""
    is_folder = path.is_dir() and not path.is_symlink()
    if not os.path.lexists(path) or not (is_folder or tmp.is_dir()):
        os.replace(tmp, path)
        return
    old = old_name(path)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if not os.path.lexists(path):  # the new one is not in: the previous output goes back
            os.replace(old, path)
        raise
    _remove(old)


def _name_output(error: OSError, path: Path, tmp: Path) -> None:
    """The user knows the output, not its hidden temporary name: name `path` in the error instead. An
    error that names no file (pyarrow's and write()'s do not) is about `path` when it is a full or
    read-only disk; otherwise it is only known to have happened while `path` was written (`writing`,
    read by uftdata.failures)."""
    name = error.filename
    if (name is None and error.errno in _OUTPUT_ERRNOS) or (name is not None and str(name).startswith(str(tmp))):
        error.filename = str(path)
    elif name is None and not hasattr(error, "writing"):
        # An attribute of our own on the OSError in flight (add_note needs 3.11); failures.py reads it.
        error.writing = str(path)  # type: ignore[attr-defined]


# --- the lock and the leftovers of dead processes ----------------------------------------------------

_HELD: set[str] = set()  # locks held by `output_lock` in this process (for a whole command)


@contextmanager
def output_lock(path: Path) -> Iterator[None]:
    """Hold `path`'s lock for a whole command that writes into `path` over time (a training run's
    folder), so a second process writing there stops with one line. `atomic_path` on `path` inside
    the block writes under this lock instead of stopping itself."""
    path = Path(path)
    key = os.path.abspath(lock_name(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = lock_name(path)
    if os.path.abspath(lock) in _HELD:  # this command holds it (output_lock)
        yield
        return
    _acquire(lock, path)
    try:
        yield
    finally:
        if _lock_pid(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _acquire(lock: Path, path: Path) -> None:
    for _ in range(3):  # a dead process's lock is removed and the creation tried again
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _wait_for_pid(lock)
            if pid is not None and _alive(pid):
                raise _busy(path, lock, pid) from None
            _break_stale(lock, pid, path)
            continue
        except OSError as error:  # e.g. a read-only file system: say which output could not be written
            error.filename = str(path)
            raise
        with os.fdopen(fd, "w") as out:
            out.write(f"{os.getpid()}\n")
        return
    raise _busy(path, lock, _lock_pid(lock))


def _busy(path: Path, lock: Path, pid: int | None) -> UftDataError:
    return UftDataError(str(path), f"another process (PID {pid}) is writing it",
                        fix=f"Wait for it to finish; if no such process runs, remove {lock}.")


def _wait_for_pid(lock: Path) -> int | None:
    deadline = time.monotonic() + _EMPTY_LOCK_WAIT_S
    while (pid := _lock_pid(lock)) is None and lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def _break_stale(lock: Path, pid: int | None, path: Path) -> None:
    """Remove a dead process's lock. Renamed aside first, so that of two processes breaking it at once
    only one wins; if what it took holds a live PID (a writer that locked in between), it goes back."""
    aside = lock.with_name(f"{lock.name}.{os.getpid()}.stale")
    try:
        os.replace(lock, aside)
    except FileNotFoundError:
        return
    taken = _lock_pid(aside)
    if taken != pid and taken is not None and _alive(taken):
        os.replace(aside, lock)
        raise _busy(path, lock, taken)
    aside.unlink(missing_ok=True)


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text(encoding="ascii").strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill(0, ...) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _clear_leftovers(path: Path) -> None:
    """Remove the `.NAME.PID.partial` and `.NAME.PID.old` of dead processes (and ours: we hold the lock).
    An `.old` whose output is missing is put back: its process died between the two renames of a
    replace, so it is the previous, complete output."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.(partial|old)")
    with os.scandir(path.parent) as entries:
        found = [(entry.name, match) for entry in entries if (match := pattern.fullmatch(entry.name))]
    for name, match in sorted(found):
        pid = int(match[1])
        if pid != os.getpid() and _alive(pid):
            continue
        leftover = path.parent / name
        if match[2] == "old" and not os.path.lexists(path):
            os.replace(leftover, path)
        else:
            _remove(leftover)


def _remove(path: Path) -> None:
    """Remove our own temporary file or folder; a link is unlinked, never followed."""
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def give_normal_modes(folder: Path) -> None:
    """Files 0666 and folders 0777 less the umask, as `open` and `mkdir` make them. Some writers
    (safetensors' save_file) create 0600 files, which other users of a shared model folder cannot read."""
    mask = os.umask(0)  # the only way to read it is to set it; put back at once
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name, mode in [(d, 0o777) for d in dirs] + [(f, 0o666) for f in files]:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):  # chmod would follow it out of the folder
                os.chmod(entry, mode & ~mask)
