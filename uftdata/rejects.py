"""Where bad records go: an error (default) or, with `--on-error skip`, a JSONL rejects file."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from uftdata.atomic import atomic_path
from uftdata.errors import RecordError

OnError = Literal["raise", "skip"]
# Every line of a rejects file is an object with exactly these keys; no marker line is added, so each
# line stays a reject for whoever reads the file.
ENTRY_KEYS = ("where", "field", "error", "record")


class Rejects:
    """Collects rejected records with their reasons; raises the first one unless skipping."""

    def __init__(self, on_error: OnError = "raise") -> None:
        self.on_error = on_error
        self.records: list[dict[str, object]] = []
        self.by_field: Counter[str] = Counter()

    @classmethod
    def raising(cls) -> Rejects:
        return cls("raise")

    @property
    def count(self) -> int:
        return len(self.records)

    def reject(self, error: RecordError, record: object) -> None:
        if self.on_error == "raise":
            raise error
        self.by_field[error.field or "record"] += 1
        self.records.append({"where": error.record_where, "field": error.field, "error": error.line(), "record": record})

    def write(self, path: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> None:
        """Write the rejects file at `path` atomically (replacing only an earlier rejects file)."""
        with open_rejects(path, overwrite=overwrite, inputs=inputs) as tmp:
            self.dump(tmp)

    def dump(self, path: Path) -> None:
        """One JSON object per rejected record (ENTRY_KEYS), in the order they were met."""
        with open(path, "w", encoding="utf-8") as out:
            for entry in self.records:
                out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")


def open_rejects(path: Path, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> AbstractContextManager[Path]:
    """`atomic_path` for a rejects file: an existing file is replaced when it is one (or with overwrite)."""
    return atomic_path(path, overwrite=overwrite, owned=is_rejects_file, inputs=inputs)


def is_rejects_file(path: Path) -> bool:
    """A rejects file uftdata wrote: its first line is a JSON object with exactly ENTRY_KEYS. We write
    one only when there are rejects, so it is never empty."""
    try:
        with open(path, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and sorted(first) == sorted(ENTRY_KEYS)
