"""Where bad records go: an error (default) or, with `--on-error skip`, a JSONL rejects file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Literal

from uftdata.atomic import atomic_path
from uftdata.errors import RecordError

OnError = Literal["raise", "skip"]


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

    def write(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
            for entry in self.records:
                out.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
