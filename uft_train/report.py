"""A run folder, reported: the text printed at the end of training (`run_report`) and the figures of
`uft-train report` (`draw_plots`). Both also read a run that is still going (no summary.json yet).

Neither imports torch, and matplotlib only when drawing.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from uft_train.errors import TrainError
from uft_train.loss_table import LOSSES
from uft_train.predictions import PREDICTIONS

METRICS = "metrics.jsonl"


def read_steps(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows; a line still being written (a running run) is left out."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise TrainError(str(run_dir), f"is not a run folder: it has no {METRICS}",
                           fix="Give the output.dir of a uft-train run.")
    steps = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            continue
    return steps


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_report(run_dir: Path) -> str:
    steps = read_steps(run_dir)
    summary = read_summary(run_dir)
    lines = [f"run: {run_dir}", f"  adapter: {run_dir / 'adapter'}", f"  metrics: {run_dir / METRICS}"]
    if steps:
        first, last = steps[0], steps[-1]
        speed = sum(s["tokens_per_s"] for s in steps) / len(steps)
        lines.append(f"  steps {last['step']}: loss {first['loss']:.4f} -> {last['loss']:.4f}; "
                     f"{speed:,.0f} tokens/s; padding {sum(s['padding_share'] for s in steps) / len(steps):.1%}")
    if not summary:
        lines.append("  not finished: no summary.json yet")
    for key, value in sorted(summary.get("final_eval", {}).items()):
        lines.append(f"  {key}: {value:.4f}")
    return "\n".join(lines)


def draw_plots(run_dir: Path, out: Path) -> list[str]:
    """Write out/curves.png and, when the run saved its test rewards, out/calibration.png; returns
    the lines to print (each figure's path, or why calibration was not drawn)."""
    import polars as pl

    from uft_train.plots import calibration_figure, curves_figure
    from uftdata.figures import save_png

    steps = read_steps(run_dir)
    curves = save_png(curves_figure(steps, read_summary(run_dir).get("final_eval")), out / "curves.png")
    lines = [f"  plot: {curves}"]
    predictions = run_dir / PREDICTIONS
    if predictions.is_file():
        figure = calibration_figure(pl.read_parquet(predictions), beta=_recipe(run_dir).get("loss", {}).get("beta"))
        lines.append(f"  plot: {save_png(figure, out / 'calibration.png')}")
    else:
        lines.append(f"  calibration: not drawn: {why_no_predictions(run_dir)}")
    return lines


def why_no_predictions(run_dir: Path) -> str:
    loss = _recipe(run_dir).get("loss", {}).get("name")
    data = json.loads((run_dir / "data.json").read_text(encoding="utf-8")) if (run_dir / "data.json").is_file() else {}
    if loss in LOSSES and not LOSSES[loss].needs_reference:
        return f"loss {loss} has no implicit reward, so the run wrote no {PREDICTIONS}"
    if data and not data.get("test", {}).get("examples"):
        return f"the run has no test examples (data.json), so it wrote no {PREDICTIONS}"
    if not (run_dir / "summary.json").is_file():
        return f"the run has not finished ({PREDICTIONS} is written after the final evaluation)"
    return f"{run_dir / PREDICTIONS} not found (a run made before uft-train wrote it?)"


def _recipe(run_dir: Path) -> dict:
    path = run_dir / "recipe.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
