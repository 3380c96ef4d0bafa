"""Outputs appear complete or not at all: write to a hidden temporary sibling, rename when done."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def partial_name(path: Path) -> Path:
    # Same folder, so the final rename is atomic; hidden and suffixed so a killed run's leftover is
    # recognisable (and ignored by `.gitignore` and by our folder scans).
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


@contextmanager
def atomic_path(path: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path (file or folder) that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    _remove(tmp)
    try:
        yield tmp
        if path.exists() and path.is_dir():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
