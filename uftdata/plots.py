"""Figures of a schema file or mixture: score histograms and lengths (`uftdata inspect --plot`, cards).

Both take the per-row stats frame of `uftdata.inspect.inspect_with_stats` (columns split, source,
kind, score, prompt_chars, completion_chars; one small row per data row). Filter it first to draw
one split only. `*_figure` builds the figure (pure; what the tests look at); `plot_*` also writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from uftdata.figures import colors, new_figure, no_data, save_png
from uftdata.schema import KINDS

SCORE_BIN = 0.05
SCORE_EDGES = np.linspace(0.0, 1.0, round(1 / SCORE_BIN) + 1)
LENGTH_BINS = 40
HEAVY_TAIL = 10  # max over median above which lengths are drawn on a log axis
LEGEND_GAP = 0.04  # axes fraction kept free between the tallest bar and the legend above it
MIN_ROOM = 0.3  # below this axes fraction under the legend, the legend goes beside the panel instead


def plot_scores(stats: pl.DataFrame, path: Path) -> Path:
    """Write `scores_figure(stats)` to `path` (PNG); returns `path`."""
    return save_png(scores_figure(stats), path)


def plot_lengths(stats: pl.DataFrame, path: Path) -> Path:
    """Write `lengths_figure(stats)` to `path` (PNG); returns `path`."""
    return save_png(lengths_figure(stats), path)


def scores_figure(stats: pl.DataFrame) -> Figure:
    """One panel per kind: rows per score bin of 0.05 over [0,1] (the last bin includes 1), stacked by source."""
    kinds = _present(stats, "kind", order=KINDS)
    figure = new_figure(max(4.5, 3.8 * len(kinds)), 3.6)
    axes = figure.subplots(1, max(1, len(kinds)), squeeze=False)[0]
    if not kinds:
        no_data(axes[0], "no rows")
        return figure
    palette = colors(_present(stats, "source"))
    panels: list[tuple[Axes, Legend, float]] = []
    for ax, kind in zip(axes, kinds):
        rows = stats.filter(pl.col("kind") == kind)
        bottom = np.zeros(len(SCORE_EDGES) - 1)
        for source in _present(rows, "source"):
            scores = rows.filter(pl.col("source") == source)["score"].to_numpy()
            counts, _ = np.histogram(np.clip(scores, 0.0, 1.0), bins=SCORE_EDGES)
            ax.bar(SCORE_EDGES[:-1], counts, width=SCORE_BIN, bottom=bottom, align="edge", color=palette[source],
                   edgecolor="white", linewidth=0.5, label=f"{source} ({len(scores):,})")
            bottom += counts
        ax.set(xlim=(0, 1), xlabel="score", ylabel="rows", title=f"{kind}: {rows.height:,} rows")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # rows: no tick at 2.5
        legend = ax.legend(title="source", fontsize="small", loc="upper center")
        panels.append((ax, legend, float(bottom.max())))
    figure.suptitle(f"Score distribution by kind ({_splits(stats)})")
    _legends_above_bars(figure, panels)
    return figure


def _legends_above_bars(figure: Figure, panels: list[tuple[Axes, Legend, float]]) -> None:
    """Raise each panel's y limit so that its legend sits above the tallest bar. sft, binary and
    pairwise rows score 0 or 1, so their tallest bars are at both edges, where a legend placed by
    matplotlib ("best") covered them. The legend's height relative to its panel is known only once
    the figure is laid out: one layout pass without rendering measures it (deterministic, so the PNG
    bytes stay the same)."""
    figure.draw_without_rendering()
    for ax, legend, tallest in panels:
        room = legend.get_window_extent().transformed(ax.transAxes.inverted()).y0 - LEGEND_GAP
        if room < MIN_ROOM:  # many sources in a short panel: beside it rather than over the bars
            legend.set_loc("upper left")
            legend.set_bbox_to_anchor((1.02, 1.0), transform=ax.transAxes)
            continue
        ax.set_ylim(0, max(tallest, 1.0) / room)


def lengths_figure(stats: pl.DataFrame) -> Figure:
    """Prompt and completion length in characters: one histogram line per source and kind."""
    figure = new_figure(11, 3.8)
    axes = figure.subplots(1, 2)
    groups = stats.select("source", "kind").unique().sort("source", "kind").rows() if stats.height else []
    palette = colors([f"{s} / {k}" for s, k in groups])
    for ax, column, what in zip(axes, ("prompt_chars", "completion_chars"), ("prompt", "completion")):
        if not groups:
            no_data(ax, "no rows")
            continue
        edges, log = _length_edges(stats[column].to_numpy())
        for source, kind in groups:
            values = stats.filter((pl.col("source") == source) & (pl.col("kind") == kind))[column].to_numpy()
            counts, _ = np.histogram(values, bins=edges)
            name = f"{source} / {kind}"
            ax.stairs(counts, edges, color=palette[name], linewidth=1.5, label=f"{name} ({len(values):,})")
        _label_lengths(ax, what, stats[column], log)
    if groups:
        axes[1].legend(title="source / kind", fontsize="small")
    figure.suptitle(f"Lengths in characters ({_splits(stats)})")
    return figure


def _length_edges(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Bin edges over all rows; log-spaced when a long tail would squeeze the bulk into one bin."""
    lo, hi, median = float(values.min()), float(values.max()), float(np.median(values))
    if hi > HEAVY_TAIL * max(median, 1.0):
        return np.geomspace(max(lo, 1.0), hi + 1.0, LENGTH_BINS + 1), True
    return np.linspace(0.0, max(hi, 1.0) * 1.0001, LENGTH_BINS + 1), False


def _label_lengths(ax: Axes, what: str, values: pl.Series, log: bool) -> None:
    if log:
        ax.set_xscale("log")
        # The default labels minor ticks too, which overlap. Compact labels (2k, 50k, 1.5M) at 1-2-5
        # steps over up to three decades, at powers of ten over more: full numbers at 1-2-5 steps
        # ("10,000 20,000 50,000") ran into each other from four decades on.
        decades = np.log10(max(_number(values.max()), 1.0) / max(_number(values.min()), 1.0))
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: compact_number(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    median, p95 = (int(_number(values.quantile(q, "nearest"))) for q in (0.5, 0.95))
    ax.set(xlabel=f"{what} characters{' (log scale)' if log else ''}", ylabel="rows",
           title=f"{what}: median {median:,}, p95 {p95:,}, max {int(_number(values.max())):,}")


def _number(statistic: object) -> float:
    """A statistic of a non-empty numeric column, which polars types as any literal or None."""
    assert isinstance(statistic, (int, float)), statistic
    return float(statistic)


def compact_number(x: float) -> str:
    """A tick label: 500, 2k, 50k, 1.5M (one decimal at most; no trailing .0)."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.1f}".removesuffix(".0") + suffix
    return f"{x:.1f}".removesuffix(".0")


def _present(stats: pl.DataFrame, column: str, order: tuple[str, ...] = ()) -> list[str]:
    """The values of `column` that occur, in `order` first (e.g. the schema's kinds), then sorted."""
    if not stats.height:
        return []
    found = set(stats[column].unique().to_list())
    return [v for v in order if v in found] + sorted(found - set(order))


def _splits(stats: pl.DataFrame) -> str:
    if not stats.height:
        return "no rows"
    counts = stats.group_by("split").len().sort("split").rows()
    return ", ".join(f"{split} {n:,}" for split, n in counts) + " rows"
