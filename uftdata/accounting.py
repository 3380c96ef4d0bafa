"""Counts every command reports: records_in = records_used + sum(dropped[reason])."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Summary:
    """What a command read, wrote and dropped; printed (`format_summary`) and stored in file footers and manifests."""

    command: str
    records_in: int = 0
    records_used: int = 0
    rows_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    # Row-level outcomes inside records that were used (unfold: assistant turns not emitted).
    turns_dropped: Counter[str] = field(default_factory=Counter)
    # Kept, but worth knowing (e.g. `tie`: a rated pair with equal ratings keeps the source's label).
    notes: Counter[str] = field(default_factory=Counter)
    inputs: list[dict[str, object]] = field(default_factory=list)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def check(self) -> None:
        """The accounting identity; a failure here is a bug in the command, not in the input."""
        total = self.records_used + sum(self.dropped.values())
        if total != self.records_in:
            raise AssertionError(f"{self.command}: records_in={self.records_in} but used+dropped={total}")

    def reasons(self) -> dict[str, dict[str, int]]:
        """The counters by reason, sorted: `dropped` always, `turns_dropped` and `notes` when not all zero."""
        out = {"dropped": dict(sorted(self.dropped.items()))}
        for name, counter in (("turns_dropped", self.turns_dropped), ("notes", self.notes)):
            counts = {k: v for k, v in sorted(counter.items()) if v}
            if counts:
                out[name] = counts
        return out

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "command": self.command,
            "records_in": self.records_in,
            "records_used": self.records_used,
            "rows_out": self.rows_out,
            **self.reasons(),
        }
        if self.inputs:
            out["inputs"] = self.inputs
        return out


def format_summary(summary: Summary, out: Path, rejects: Path | None) -> str:
    """What `unfold`, `score` and `feedback` print when done: the counts, each reason, the rejects file."""
    lines = [f"{summary.command}: {summary.records_in} records in, {summary.records_used} used, "
             f"{sum(summary.dropped.values())} dropped -> {summary.rows_out} rows in {out}"]
    lines += [f"  {name}.{reason}: {n}" for name, counts in summary.reasons().items() for reason, n in counts.items()]
    if rejects is not None:
        lines.append(f"  rejects: {rejects}")
    return "\n".join(lines)
