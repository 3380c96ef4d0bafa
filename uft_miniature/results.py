"""The benchmark's results: the selection grids (in the manner of the paper's Tables 10-13), the
final table in the paper's shape (methods as rows, mean and spread over seeds, each at its own
selected setting), the claims with their verdicts (claims.py), and three figures (plots.py)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from uft_miniature.claims import claims, claims_markdown, judge
from uft_miniature.plots import FIGURES, ratio_sweep_figure, reward_kl_figure, selection_figure
from uftdata.atomic import atomic_path, check_output
from uftdata.figures import drawn_by_uft

# (metric, column title, higher is better); the order of the table's columns.
COLUMNS = (
    ("accuracy", "instruction accuracy", True),
    ("reward", "reward (known RM)", True),
    ("fact_recall", "fact recall (pretraining format)", True),
    ("perplexity", "held-out perplexity", False),
    ("kl", "KL from base, answers (per token)", False),
    ("kl_pretrain", "KL from base, pretraining text (per token)", False),
)
Table = dict[str, dict[str, tuple[float, float, int]]]


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(runs: dict[str, dict]) -> Table:
    """{method: {metric: (mean, sd, n)}} over seeds."""
    table = {}
    for method, by_seed in runs.items():
        values = list(by_seed.values())
        table[method] = {metric: (*summarize([r[metric] for r in values]), len(values))
                         for metric, _, _ in COLUMNS if all(metric in r for r in values)}
    return table


def _setting(settings: dict, method: str) -> list[str]:
    s = settings.get(method)
    if s is None:
        return ["-", "-", "-"]
    return [f"{s['lr']:g}", "-" if s["beta"] is None else f"{s['beta']:g}", str(s["steps"])]


def markdown_table(table: Table, settings: dict) -> str:
    lines = ["| method | lr | beta | steps | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(COLUMNS)]
    for method, metrics in table.items():
        n = max((v[2] for v in metrics.values()), default=0)
        cells = []
        for metric, _, _ in COLUMNS:
            if metric not in metrics:
                cells.append("-")
                continue
            mean, sd, _ = metrics[metric]
            digits = 4 if metric.startswith("kl") else 3
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{mean:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(_setting(settings, method)) + f" | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_markdown(selection: dict) -> str:
    """Per stage, the selection reward (accuracy) of every grid point: learning rates as rows, betas
    as columns; the pick in bold; the points the grid grew by, and a pick still at its edge, noted."""
    parts = []
    for stage, s in selection.items():
        betas = sorted({p["beta"] for p in s["points"]}, key=lambda b: -1.0 if b is None else b)
        lrs = sorted({p["lr"] for p in s["points"]})
        cell = {(p["lr"], p["beta"]): p for p in s["points"]}
        grown = f"; grown by {s['grown']} past an edge" if s["grown"] else ""
        edge = " (still at the grid's edge)" if s["at_edge"] else ""
        lines = [f"**{stage}**: {s['source'] or 'grid'}{grown}; pick `{s['pick']}`{edge}", "",
                 "| lr | " + " | ".join("-" if b is None else f"beta {b:g}" for b in betas) + " |",
                 "|---:|" + "---:|" * len(betas)]
        for lr in lrs:
            row = []
            for b in betas:
                p = cell.get((lr, b))
                text = "" if p is None else f"{p['reward']:.3f} ({p['accuracy']:.3f})"
                row.append(f"**{text}**" if p is not None and p["tag"] == s["pick"] else text)
            lines.append(f"| {lr:g} | " + " | ".join(row) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def judged_claims(runs: dict, ratios: list[float]) -> list[dict]:
    judged = [judge(c, runs) for c in claims(max(ratios) if ratios else 13.0)]
    return [j for j in judged if j is not None]


def write_results(results: dict, out: Path, header: str, ratios: list[float]) -> Table:
    """results.json, results.md and the figures (plots.FIGURES) in `out`.

    A figure there that uft did not draw is refused before anything is written, so the files are
    never left from two different runs; each is written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for figure in FIGURES:
        check_output(out / figure, owned=drawn_by_uft, fix="Move it away, or draw into another folder.")
    runs = {m: {str(s): r for s, r in by.items()} for m, by in results["runs"].items()}
    table = aggregate(runs)
    judged = judged_claims(runs, ratios)
    document = {"selection": results["selection"], "settings": results["settings"], "runs": runs,
                "table": {m: {k: {"mean": v[0], "sd": v[1], "n": v[2]} for k, v in t.items()} for m, t in table.items()},
                "claims": judged}
    markdown = "\n\n".join([
        header.rstrip(), "## Selection (one seed, selection questions): reward (accuracy)",
        selection_markdown(results["selection"]), "## At the selected settings (test questions)",
        markdown_table(table, results["settings"]), "## Claims (paired over seeds; rule in uft_miniature/claims.py)",
        claims_markdown(judged)]) + "\n"
    for name, text in {"results.json": json.dumps(document, indent=2, sort_keys=True) + "\n",
                       "results.md": markdown}.items():
        with atomic_path(out / name, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
    selection_figure(results["selection"], out / "selection.png")
    ratio_sweep_figure(table, ratios, out / "ratio_sweep.png")
    reward_kl_figure(runs, table, out / "reward_vs_kl.png")
    return table
