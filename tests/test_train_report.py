"""eval_predictions.parquet and `uft-train report`: the final evaluation's reward per test example
(exactly 0 before any step), and the figures of real tiny runs (test_train_loop's demo mixture)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from matplotlib.collections import PathCollection
from test_train_loop import LOSS_KINDS, read_metrics, tiny_recipe

import uft_train.train as train_module
from uft_train import cli
from uft_train.data import read_split
from uft_train.plots import calibration_figure, curves_figure, eval_points
from uft_train.predictions import PREDICTIONS, SCHEMA
from uft_train.report import read_steps
from uft_train.step import Run
from uft_train.train import train

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py



@pytest.fixture(scope="module")
def trained(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Run]:
    """una_mse, 2 steps, evaluated after each: a run folder with every metric the figures draw."""
    captured: list[Run] = []
    loop = train_module.run_loop

    def spy(run: Run, *args: object) -> None:
        captured.append(run)
        loop(run, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "run_loop", spy)
        run_dir = train(tiny_recipe(mixture, tmp_path_factory.mktemp("run") / "run", "train.max_steps=2",
                                    "train.eval_every=1"))
    return run_dir, captured[0]


def untrained(recipe, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Run]:  # noqa: ANN001
    """A run of zero steps: the final evaluation sees the policy as built (LoRA B = 0)."""
    captured: list[Run] = []
    loop = train_module.run_loop

    def no_steps(run: Run, folder, start: int, total_steps: int, steps_per_epoch: int) -> None:  # noqa: ANN001
        captured.append(run)
        loop(run, folder, start, 0, steps_per_epoch)

    monkeypatch.setattr(train_module, "run_loop", no_steps)
    return train(recipe), captured[0]


def report(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    with pytest.raises(SystemExit) as info:
        cli.main(["report", *args])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out.splitlines(), err


# --- eval_predictions.parquet -----------------------------------------------------------------------

def test_predictions_hold_every_test_example_and_agree_with_the_eval_metrics(trained: tuple[Path, Run],
                                                                              mixture: Path) -> None:
    run_dir, run = trained
    predictions = pl.read_parquet(run_dir / PREDICTIONS)
    assert predictions.schema == SCHEMA
    assert predictions.height == len(run.test) > 0
    assert predictions["step"].unique().to_list() == [2]
    test_rows = read_split(mixture, "test")
    assert test_rows is not None
    columns = ["id", "source", "kind", "score", "label", "pair_id"]
    expected = test_rows[[e.row for e in run.test]].select(columns).cast({c: SCHEMA[c] for c in columns})
    assert predictions.select(columns).equals(expected)
    # The file's rewards are the ones the final eval averaged, per kind.
    final_eval = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    by_kind = dict(predictions.group_by("kind").agg(pl.col("reward").cast(pl.Float64).mean()).iter_rows())
    assert by_kind.keys() == {k.removeprefix("eval/reward/") for k in final_eval if k.startswith("eval/reward/")}
    for kind, mean in by_kind.items():
        assert mean == pytest.approx(final_eval[f"eval/reward/{kind}"], abs=1e-6)
    assert predictions["reward"].abs().min() > 0  # two steps of lr 1e-2 moved every reward


@pytest.mark.parametrize("loss", ["una_mse", "kto"])
def test_rewards_before_any_step_are_exactly_zero(loss: str, mixture: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA B starts at 0 and dropout is off: policy and reference log-probs are equal, r = 0."""
    run_dir, run = untrained(tiny_recipe(mixture, tmp_path / "run", f"loss.name={loss}", *LOSS_KINDS[loss]),
                             monkeypatch)
    predictions = pl.read_parquet(run_dir / PREDICTIONS)
    assert predictions.height == len(run.test) > 0
    assert predictions["reward"].to_list() == [0.0] * predictions.height
    assert predictions["step"].to_list() == [0] * predictions.height
    assert read_metrics(run_dir) == []


# --- uft-train report on real runs ------------------------------------------------------------------

def test_report_prints_the_text_and_draws_both_figures(trained: tuple[Path, Run], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = trained
    out = tmp_path / "figures"
    code, lines, err = report(str(run_dir), "-o", str(out), capsys=capsys)
    assert code == 0 and err == ""
    assert lines[0] == f"run: {run_dir}" and lines[-2:] == [f"  plot: {out / 'curves.png'}",
                                                            f"  plot: {out / 'calibration.png'}"]
    for name in ("curves.png", "calibration.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000
    # Default folder: RUN_DIR/plots; the same run gives the same bytes.
    copy = shutil.copytree(run_dir, tmp_path / "copy")
    assert report(str(copy), capsys=capsys)[0] == 0
    for name in ("curves.png", "calibration.png"):
        assert (copy / "plots" / name).read_bytes() == (out / name).read_bytes()


def test_curves_draw_every_step_and_every_evaluation(trained: tuple[Path, Run]) -> None:
    run_dir, _ = trained
    steps = read_metrics(run_dir)
    final_eval = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    figure = curves_figure(steps, final_eval)
    loss, reward, accuracy = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["Loss", "Implicit reward by kind", "Pairwise reward accuracy"]
    assert all(ax.get_xlabel() == "step" for ax in figure.axes)
    assert loss.get_ylabel() == "loss" and reward.get_ylabel() == "implicit reward r (mean)"
    lines = {line.get_label(): line for line in loss.lines}
    assert list(lines["train loss"].get_xdata()) == [1, 2]
    assert list(lines["train loss"].get_ydata()) == [m["loss"] for m in steps]
    # eval after step 1, then the final eval replaces the one after step 2 (the same model).
    assert list(lines["eval loss"].get_ydata()) == [steps[0]["eval/loss"], final_eval["eval/loss"]]
    labels = [t.get_text() for t in reward.get_legend().get_texts()]
    kinds = sorted({k.removeprefix("reward/") for m in steps for k in m if k.startswith("reward/")})
    assert sorted(label.removeprefix("train ") for label in labels if label.startswith("train ")) == kinds
    assert {"eval sft", "eval score"} <= set(labels)
    assert accuracy.has_data() == any("reward_accuracy/pairwise" in m for m in steps)


def test_calibration_has_one_point_per_test_example(trained: tuple[Path, Run]) -> None:
    run_dir, _ = trained
    predictions = pl.read_parquet(run_dir / PREDICTIONS)
    figure = calibration_figure(predictions, beta=0.1)
    full = figure.axes[0]
    points = [c for c in full.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in points) == predictions.height
    offsets = torch.tensor([xy for c in points for xy in c.get_offsets().tolist()], dtype=torch.float64)
    rewards = torch.tensor(predictions["reward"].to_list(), dtype=torch.float64)
    assert sorted(offsets[:, 0].tolist()) == pytest.approx(sorted(torch.sigmoid(rewards).tolist()))
    assert full.get_xlabel() == "predicted σ(r) = sigmoid(implicit reward)" and full.get_ylabel() == "target score"
    assert full.get_xlim() == full.get_ylim() == (-0.02, 1.02)
    assert "y = x (calibrated)" in [line.get_label() for line in full.lines]
    assert figure.get_suptitle() == f"Calibration on the test split: {predictions.height} examples at step 2, β = 0.1"


def test_a_run_without_test_examples_gets_curves_and_says_why_no_calibration(
        mixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """dpo trains pairwise rows only, and the demo's test split has none."""
    run_dir = train(tiny_recipe(mixture, tmp_path / "run", "loss.name=dpo", *LOSS_KINDS["dpo"], "train.max_steps=1"))
    assert not (run_dir / PREDICTIONS).exists()
    code, lines, _ = report(str(run_dir), capsys=capsys)
    assert code == 0
    assert lines[-2:] == [f"  plot: {run_dir / 'plots' / 'curves.png'}",
                          f"  calibration: not drawn: the run has no test examples (data.json), so it wrote no {PREDICTIONS}"]
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == ["curves.png"]


# --- run folders by hand: sft, a running run, not a run ---------------------------------------------

def fake_run(folder: Path, steps: list[dict], *, loss: str = "una_mse", finished: bool = True) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))
    (folder / "recipe.yaml").write_text(f"loss: {{name: {loss}, beta: 0.1}}\n")
    (folder / "data.json").write_text(json.dumps({"test": {"examples": 3}}))
    if finished:
        (folder / "summary.json").write_text(json.dumps({"final_eval": {"eval/loss": 1.5}}))
    return folder


def step(i: int, **extra: float) -> dict:
    return {"step": i, "loss": 2.0 / i, "tokens_per_s": 100.0, "padding_share": 0.1, **extra}


def test_an_sft_run_has_no_reward_panels_and_no_calibration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = fake_run(tmp_path / "sft", [step(i) for i in range(1, 4)], loss="sft")
    code, lines, _ = report(str(run_dir), capsys=capsys)
    assert code == 0
    assert lines[-1] == f"  calibration: not drawn: loss sft has no implicit reward, so the run wrote no {PREDICTIONS}"
    figure = curves_figure([step(i) for i in range(1, 4)], {"eval/loss": 1.5})
    loss, reward, accuracy = figure.axes
    assert [line.get_label() for line in loss.lines] == ["train loss", "eval loss"]
    for ax in (reward, accuracy):
        assert not ax.has_data() and ax.texts[0].get_text().startswith("no data\n")


def test_a_running_run_is_reported_from_what_is_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = fake_run(tmp_path / "run", [step(i, **{"reward/sft": 0.01 * i}) for i in range(1, 61)], finished=False)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 61, "lo')  # the line being written
    code, lines, _ = report(str(run_dir), capsys=capsys)
    assert code == 0
    assert "  steps 60: loss 2.0000 -> 0.0333; 100 tokens/s; padding 10.0%" in lines
    assert "  not finished: no summary.json yet" in lines
    assert lines[-1].startswith("  calibration: not drawn: the run has not finished")
    # From 50 points on, a faint raw line and its moving mean (window: a 25th of the points).
    reward = curves_figure(read_steps(run_dir)).axes[1]  # without the torn line
    drawn = [line for line in reward.lines if len(line.get_xdata()) == 60]
    assert len(drawn) == 2 and drawn[1].get_label() == "train sft (mean of 2 steps)"
    assert drawn[1].get_ydata()[-1] == pytest.approx((0.59 + 0.60) / 2)


def test_eval_points_put_the_final_eval_at_the_last_step() -> None:
    steps = [step(1, **{"eval/loss": 3.0}), step(2), step(3, **{"eval/loss": 2.5})]
    assert [(p["step"], p["eval/loss"]) for p in eval_points(steps, {"eval/loss": 2.4})] == [(1, 3.0), (3, 2.4)]
    assert eval_points([], {"eval/loss": 1.0}) == [{"eval/loss": 1.0, "step": 0}]
    assert eval_points(steps, {}) == [steps[0], steps[2]]


def test_not_a_run_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = report(str(tmp_path), capsys=capsys)
    assert code == 2 and lines == []
    assert err.splitlines() == [f"uft-train: error: {tmp_path}: is not a run folder: it has no metrics.jsonl. "
                                "Give the output.dir of a uft-train run."]
    assert not (tmp_path / "plots").exists()
