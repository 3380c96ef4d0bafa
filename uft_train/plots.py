"""Figures of a run (`uft-train report`): training curves, and calibration on the test split.

`curves_figure` reads the metrics.jsonl rows (and summary.json's final eval); `calibration_figure`
reads eval_predictions.parquet. Both are pure: they build a Figure; `uftdata.figures.save_png`
writes it. A metric a run does not log (an sft run has no rewards) gives a panel that says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from uftdata.figures import colors, moving_mean, new_figure, no_data
from uftdata.schema import KINDS

SMOOTH_FROM = 50   # from this many points, a train curve is drawn faint with its moving mean on top
CALIBRATION_BINS = 10
MIN_PER_BIN = 5    # fewer bins for a small test split: a bin's mean should be a mean
KIND_COLORS = colors(KINDS)


def curves_figure(steps: Sequence[dict], final_eval: dict | None = None) -> Figure:
    """Loss, implicit reward by kind, and pairwise reward accuracy against the step: train metrics
    as lines, evaluations (periodic `eval/*`, and the final one at the last step) as markers."""
    evals = eval_points(steps, final_eval or {})
    figure = new_figure(15, 4.2)
    loss_ax, reward_ax, accuracy_ax = figure.subplots(1, 3)
    _panel(loss_ax, steps, evals, {"loss": ("loss", "C0")}, ylabel="loss",
           title="Loss", empty="metrics.jsonl has no loss yet")
    rewards = {f"reward/{kind}": (kind, KIND_COLORS[kind]) for kind in KINDS}
    _panel(reward_ax, steps, evals, rewards, ylabel="implicit reward r (mean)", title="Implicit reward by kind",
           empty="no reward/<kind> metrics\n(a loss without implicit reward, e.g. sft)", zero_line=0.0)
    _panel(accuracy_ax, steps, evals, {"reward_accuracy/pairwise": ("pairwise", KIND_COLORS["pairwise"])},
           ylabel="share of pairs with r(chosen) > r(rejected)", title="Pairwise reward accuracy",
           empty="no reward_accuracy/pairwise metric\n(no pairwise rows, or loss sft)", zero_line=0.5)
    if accuracy_ax.has_data():
        accuracy_ax.set_ylim(-0.05, 1.05)
    last = steps[-1]["step"] if steps else 0
    figure.suptitle(f"Training curves: {last} steps, {len(evals)} evaluation(s)")
    return figure


def eval_points(steps: Sequence[dict], final_eval: dict) -> list[dict]:
    """The logged evaluations, then the final one at the last step (replacing one logged there: same model)."""
    points = [m for m in steps if any(k.startswith("eval/") for k in m)]
    if final_eval:
        last = steps[-1]["step"] if steps else 0
        points = [p for p in points if p["step"] != last] + [{**final_eval, "step": last}]
    return points


def _panel(ax: Axes, steps: Sequence[dict], evals: Sequence[dict], keys: Mapping[str, tuple[str, object]], *,
           ylabel: str, title: str, empty: str, zero_line: float | None = None) -> None:
    """One line per train metric in `keys` (key -> (label, color)) and markers for its `eval/` twin."""
    for key, (label, color) in keys.items():
        x, y = series(steps, key)
        if x:
            _train_line(ax, x, y, label=f"train {label}", color=color)
        x, y = series(evals, f"eval/{key}")
        if x:
            ax.plot(x, y, "s--", color=color, markersize=6, linewidth=1, label=f"eval {label}")
    if not ax.has_data():
        no_data(ax, empty)
        ax.set_title(title)
        return
    if zero_line is not None:
        ax.axhline(zero_line, color="0.6", linewidth=0.8, linestyle=":")
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at step 1.5
    ax.legend(fontsize="small")


def _train_line(ax: Axes, x: list[int], y: list[float], *, label: str, color: object) -> None:
    if len(x) < SMOOTH_FROM:
        ax.plot(x, y, "o-", color=color, markersize=3, linewidth=1.2, label=label)
        return
    window = len(x) // 25
    ax.plot(x, y, color=color, linewidth=0.6, alpha=0.3)
    ax.plot(x, moving_mean(y, window), color=color, linewidth=1.6, label=f"{label} (mean of {window} steps)")


def series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows that carry a finite `key`."""
    points = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    points = [(s, v) for s, v in points if np.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def calibration_figure(predictions: pl.DataFrame, *, beta: float | None = None) -> Figure:
    """sigmoid(reward) against the target score, one point per test example (colored by kind), with
    the mean target per equal-count bin of predictions and the diagonal of perfect calibration.
    Left: the whole [0,1] square; right: the same, zoomed to the range of the predictions (a small
    beta or an early step keeps them near 0.5)."""
    figure = new_figure(12, 5.4)
    axes = figure.subplots(1, 2)
    if predictions.height == 0:
        for ax in axes:
            no_data(ax, "eval_predictions.parquet has no rows")
        return figure
    predicted = 1.0 / (1.0 + np.exp(-predictions["reward"].to_numpy().astype(np.float64)))
    target = predictions["score"].to_numpy().astype(np.float64)
    kinds = predictions["kind"].to_list()
    for ax in axes:
        _calibration_panel(ax, predicted, target, kinds)
    # A margin around [0,1], so points at 0 and 1 (sft rows, labels) are not hidden under the frame.
    axes[0].set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), aspect="equal", title="All of [0, 1]")
    lo, hi = float(predicted.min()), float(predicted.max())
    pad = max((hi - lo) * 0.05, 0.005)
    axes[1].set(xlim=(lo - pad, hi + pad), ylim=(-0.02, 1.02), title="Zoomed to the predictions")
    brier = float(np.mean((predicted - target) ** 2))
    axes[0].text(0.03, 0.97, f"mean (σ(r) − score)² = {brier:.4f}", transform=axes[0].transAxes, va="top",
                 bbox={"facecolor": "white", "edgecolor": "0.8"})
    step = predictions["step"][0]
    figure.suptitle(f"Calibration on the test split: {predictions.height:,} examples at step {step}"
                    + (f", β = {beta:g}" if beta is not None else ""))
    return figure


def _calibration_panel(ax: Axes, predicted: np.ndarray, target: np.ndarray, kinds: list[str]) -> None:
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="y = x (calibrated)")
    alpha = 0.6 if len(predicted) <= 500 else 0.25  # many points: overlap shows as density
    for kind in [k for k in KINDS if k in kinds] + sorted(set(kinds) - set(KINDS)):
        mine = np.array([k == kind for k in kinds])
        ax.scatter(predicted[mine], target[mine], s=16, alpha=alpha, color=KIND_COLORS.get(kind, "0.3"),
                   edgecolors="none", label=f"{kind} ({int(mine.sum()):,})", zorder=3)
    x, y = binned_means(predicted, target, max(1, min(CALIBRATION_BINS, len(predicted) // MIN_PER_BIN)))
    ax.plot(x, y, "o-", color="black", markersize=5, linewidth=1.5,
            label=f"mean per bin ({len(x)} bins of ~{len(predicted) // len(x):,})")
    ax.set(xlabel="predicted σ(r) = sigmoid(implicit reward)", ylabel="target score")
    ax.legend(fontsize="small", loc="lower right")


def binned_means(predicted: np.ndarray, target: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction, mean target) per bin of about equal count, in order of prediction: equal
    widths would leave most bins empty when the predictions sit near 0.5."""
    chunks = np.array_split(np.argsort(predicted, kind="stable"), min(bins, len(predicted)))
    return (np.array([predicted[c].mean() for c in chunks]), np.array([target[c].mean() for c in chunks]))
