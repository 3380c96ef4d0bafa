"""A short text report of a finished run: where its files are, how the loss moved, the final eval."""

from __future__ import annotations

import json
from pathlib import Path


def run_report(run_dir: Path) -> str:
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    lines = [f"run: {run_dir}", f"  adapter: {run_dir / 'adapter'}", f"  metrics: {run_dir / 'metrics.jsonl'}"]
    if steps:
        first, last = steps[0], steps[-1]
        speed = sum(s["tokens_per_s"] for s in steps) / len(steps)
        lines.append(f"  steps {last['step']}: loss {first['loss']:.4f} -> {last['loss']:.4f}; "
                     f"{speed:,.0f} tokens/s; padding {sum(s['padding_share'] for s in steps) / len(steps):.1%}")
    for key, value in sorted(summary.get("final_eval", {}).items()):
        lines.append(f"  {key}: {value:.4f}")
    return "\n".join(lines)
