"""The benchmark's results: a table in the paper's shape (methods as rows, tasks as columns, mean
and spread over seeds) and two figures (the ratio sweep; reward against KL from the base)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from matplotlib import colormaps

from uft_miniature.methods import GRID, METHODS
from uftdata.atomic import atomic_path, check_output
from uftdata.figures import drawn_by_uft, new_figure, save_png

# (metric, column title, higher is better); the order of the table's columns.
COLUMNS = (
    ("accuracy", "instruction accuracy", True),
    ("reward", "reward (known RM)", True),
    ("fact_recall", "fact recall (pretraining format)", True),
    ("perplexity", "held-out perplexity", False),
    ("kl", "KL from base (per token)", False),
)
RATIOS = {m.name: m.ratio for m in (*METHODS, *GRID) if m.ratio is not None}


def summarize(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: dict[str, dict[int, dict]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """{method: {metric: (mean, sd, n)}} over seeds."""
    table = {}
    for method, by_seed in results.items():
        runs = list(by_seed.values())
        table[method] = {metric: (*summarize([r[metric] for r in runs]), len(runs))
                         for metric, _, _ in COLUMNS if all(metric in r for r in runs)}
    return table


def markdown_table(table: dict[str, dict[str, tuple[float, float, int]]]) -> str:
    lines = ["| method | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for method, metrics in table.items():
        n = max((v[2] for v in metrics.values()), default=0)
        cells = []
        for metric, _, _ in COLUMNS:
            if metric not in metrics:
                cells.append("-")
                continue
            mean, sd, _ = metrics[metric]
            digits = 4 if metric == "kl" else 3
            cells.append(f"{mean:.{digits}f} ± {sd:.{digits}f}" if n > 1 else f"{mean:.{digits}f}")
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_sweep_figure(table: dict, path: Path) -> Path:
    """UFT's metrics against the instruction:rated ratio (log x), SFT and the base as reference lines."""
    swept = sorted((RATIOS[m], m) for m in table if m in RATIOS)
    figure = new_figure(13, 3.8)
    axes = figure.subplots(1, 3)
    for ax, metric in zip(axes, ("accuracy", "reward", "fact_recall")):
        title = next(t for m, t, _ in COLUMNS if m == metric)
        xs = [r for r, _ in swept]
        means = [table[m][metric][0] for _, m in swept]
        sds = [table[m][metric][1] for _, m in swept]
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label="UFT (mixture)")
        for name, style in (("sft", "--"), ("base", ":")):
            if name in table and metric in table[name]:
                ax.axhline(table[name][metric][0], linestyle=style, color="0.4", label=name)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("instruction rows per rated row (paper: 16k..260k : 20k)")
        ax.set_ylabel(title)
        ax.set_title(title)
        ax.legend(fontsize=8)
    figure.suptitle("Ratio sweep: UFT on instruction + rated data, mean ± sd over seeds")
    return save_png(figure, path)


def distinct_colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    """Up to 20 distinguishable colors: tab20's dark shades first, then its light ones (tab10 would
    repeat after 10 methods and give two methods one color)."""
    cmap = colormaps["tab20"]
    return {name: tuple(cmap((2 * i) % 20 + (2 * i // 20) % 2)) for i, name in enumerate(names)}


def reward_kl_figure(results: dict[str, dict[int, dict]], table: dict, path: Path) -> Path:
    """Mean reward of generations against KL from the base: each seed faint, the mean with sd bars."""
    figure = new_figure(7.5, 5.2)
    ax = figure.subplots()
    names = [m for m in table if "kl" in table[m]]
    palette = distinct_colors(names)
    for name in names:
        runs = list(results[name].values())
        ax.scatter([r["kl"] for r in runs], [r["reward"] for r in runs], color=palette[name], alpha=0.3, s=14)
        (kl, kl_sd, _), (rw, rw_sd, _) = table[name]["kl"], table[name]["reward"]
        ax.errorbar(kl, rw, xerr=kl_sd, yerr=rw_sd, marker="o", color=palette[name], capsize=3, label=name)
    ax.set_xlabel("KL(policy || base) per response token, on held-out prompts")
    ax.set_ylabel("mean reward of greedy responses (known reward function)")
    ax.set_title("Reward against divergence from the base model")
    ax.legend(fontsize=8, loc="best")
    return save_png(figure, path)


def write_results(results: dict[str, dict[int, dict]], out: Path, header: str) -> dict:
    """results.json, results.md (the table under `header`), ratio_sweep.png and reward_vs_kl.png in `out`.

    A figure there that uft did not draw is refused before anything is written, so the four files
    are never left from two different runs; each is written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for figure in ("ratio_sweep.png", "reward_vs_kl.png"):
        check_output(out / figure, owned=drawn_by_uft, fix="Move it away, or draw into another folder.")
    table = aggregate(results)
    texts = {"results.json": json.dumps(
        {"runs": {m: {str(s): r for s, r in by.items()} for m, by in results.items()},
         "table": {m: {k: {"mean": v[0], "sd": v[1], "n": v[2]} for k, v in t.items()} for m, t in table.items()}},
        indent=2, sort_keys=True) + "\n", "results.md": header.rstrip() + "\n\n" + markdown_table(table) + "\n"}
    for name, text in texts.items():
        with atomic_path(out / name, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
    if any(m in RATIOS for m in table):
        ratio_sweep_figure(table, out / "ratio_sweep.png")
    reward_kl_figure(results, table, out / "reward_vs_kl.png")
    return table

