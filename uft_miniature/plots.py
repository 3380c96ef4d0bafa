"""The benchmark's figures: the selection grids, the ratio sweep with its equal-steps controls, and
reward against KL from the base (along the answers, and on pretraining-format text)."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.ticker import NullFormatter

from uft_miniature.methods import control_names, ratio_name
from uftdata.figures import new_figure, save_png

FIGURES = ("selection.png", "ratio_sweep.png", "reward_vs_kl.png")


def distinct_colors(names: list[str]) -> dict[str, tuple[float, ...]]:
    """Up to 20 distinguishable colors: tab20's dark shades first, then its light ones (tab10 would
    repeat after 10 methods and give two methods one color)."""
    cmap = colormaps["tab20"]
    return {name: tuple(cmap((2 * i) % 20 + (2 * i // 20) % 2)) for i, name in enumerate(names)}


def selection_figure(selection: dict, path: Path) -> Path:
    """One panel per stage: selection reward against learning rate (log x), a line per beta, the pick ringed."""
    stages = list(selection)
    cols = min(4, len(stages))
    rows = -(-len(stages) // cols)
    figure = new_figure(3.6 * cols, 3.0 * rows)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, stage in zip(axes, stages):
        points = selection[stage]["points"]
        betas = sorted({p["beta"] for p in points}, key=lambda b: -1.0 if b is None else b)
        for beta in betas:
            line = sorted((p["lr"], p["reward"]) for p in points if p["beta"] == beta)
            ax.plot([x for x, _ in line], [y for _, y in line], marker="o",
                    label="-" if beta is None else f"beta {beta:g}")
        chosen = next(p for p in points if p["tag"] == selection[stage]["pick"])
        ax.scatter([chosen["lr"]], [chosen["reward"]], s=160, facecolors="none", edgecolors="black", zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # a grid within one decade would label every minor tick
        ax.set_title(stage, fontsize=9)
        ax.set_xlabel("learning rate")
        ax.set_ylabel("selection reward")
        if len(betas) > 1:
            ax.legend(fontsize=7)
    for ax in axes[len(stages):]:
        ax.set_visible(False)
    figure.suptitle("Selection grids (one seed, selection questions); the pick ringed")
    return save_png(figure, path)


def ratio_sweep_figure(table: dict, ratios: list[float], path: Path) -> Path:
    """UFT's metrics against the instruction:rated ratio (log x), the equal-steps controls as open
    markers, SFT and the base as reference lines."""
    swept = sorted([(1.0, "uft")] + [(r, ratio_name(r)) for r in ratios])
    swept = [(r, m) for r, m in swept if m in table]
    largest = max(ratios) if ratios else None
    controls = [] if largest is None else [(largest, control_names(largest)[0], "at 1:1's steps"),
                                           (1.0, control_names(largest)[1], f"at {largest:g}:1's steps")]
    figure = new_figure(13, 3.8)
    for ax, metric in zip(figure.subplots(1, 3), ("accuracy", "reward", "fact_recall")):
        xs = [r for r, _ in swept]
        ax.errorbar(xs, [table[m][metric][0] for _, m in swept], yerr=[table[m][metric][1] for _, m in swept],
                    marker="o", capsize=3, label="UFT (mixture)")
        for x, name, label in controls:
            if name in table:
                ax.errorbar([x], [table[name][metric][0]], yerr=[table[name][metric][1]], marker="s",
                            mfc="none", capsize=3, linestyle="none", label=label)
        for name, style in (("sft", "--"), ("base", ":")):
            if name in table and metric in table[name]:
                ax.axhline(table[name][metric][0], linestyle=style, color="0.4", label=name)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("instruction rows per rated row (paper: 16k..260k : 20k)")
        ax.set_title(metric)
        ax.legend(fontsize=7)
    figure.suptitle("Ratio sweep at UFT's selected setting, mean ± sd over seeds")
    return save_png(figure, path)


def reward_kl_figure(runs: dict[str, dict], table: dict, path: Path) -> Path:
    """Mean reward of generations against KL from the base, along the answers and on pretraining
    text: each seed faint, the mean with sd bars."""
    figure = new_figure(13, 5.2)
    names = [m for m in table if "kl" in table[m]]
    palette = distinct_colors(names)
    for ax, kl, label in zip(figure.subplots(1, 2), ("kl", "kl_pretrain"),
                             ("along the policy's answers to test prompts", "on held-out pretraining-format text")):
        for name in names:
            if kl not in table[name]:
                continue
            seeds = list(runs[name].values())
            ax.scatter([r[kl] for r in seeds], [r["reward"] for r in seeds], color=palette[name], alpha=0.3, s=14)
            (x, x_sd, _), (y, y_sd, _) = table[name][kl], table[name]["reward"]
            ax.errorbar(x, y, xerr=x_sd, yerr=y_sd, marker="o", color=palette[name], capsize=3, label=name)
        ax.set_xlabel(f"KL(policy || base) per token, {label}")
        ax.set_ylabel("mean reward of greedy responses (known reward function)")
        ax.legend(fontsize=7, loc="best")
    figure.suptitle("Reward against divergence from the base model")
    return save_png(figure, path)
