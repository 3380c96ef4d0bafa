"""The whole miniature benchmark at its smoke size (one step per run, a 12-entity world, small
grids): every stage's grid is trained and scored on the selection questions, every method at its
pick, the ratio sweep and its controls are trained and evaluated, and the tables, claims and figures
are written; twice, in two folders, with byte-identical results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uft_miniature.cli import main
from uft_miniature.methods import RECIPES, ratio_name
from uft_miniature.plots import FIGURES
from uft_miniature.protocol import PAPER, SMOKE, K, Point, grid
from uft_train.config import load_recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    for work in (first, second):
        main(["--size", "smoke", "--work", str(work)])
    return first, second


def test_every_method_is_selected_trained_evaluated_and_tabled(runs: tuple[Path, Path]) -> None:
    work, _ = runs
    results = json.loads((work / "results.json").read_text())
    stages = [s.name for s in SMOKE.stages]
    names = ["base", *stages, "uft_ratio_13", "uft_ratio_13_at_1_1_steps", "uft_at_13_1_steps"]
    assert sorted(results["runs"]) == sorted(names)
    assert sorted(results["selection"]) == sorted(stages)
    for name in names:
        metrics = results["runs"][name]["0"]
        assert {"accuracy", "reward", "perplexity", "fact_recall", "kl", "kl_pretrain"} <= set(metrics)
    assert results["runs"]["base"]["0"]["kl"] == results["runs"]["base"]["0"]["kl_pretrain"] == 0.0
    for stage in SMOKE.stages:
        chosen = results["selection"][stage.name]
        fixed = [p.tag for p in grid(stage, _picks(results))]
        assert [p["tag"] for p in chosen["points"]][:len(fixed)] == fixed
        assert len(chosen["points"]) == len(fixed) + chosen["grown"] and chosen["grown"] <= SMOKE.extend
        assert (work / "runs" / stage.name / chosen["pick"] / "seed0" / "adapter" / "adapter_model.safetensors").is_file()
        assert results["settings"][stage.name]["lr"] == next(p["lr"] for p in chosen["points"] if p["tag"] == chosen["pick"])
    table = (work / "results.md").read_text()
    assert sum(line.startswith("| uft_ratio_13 |") for line in table.splitlines()) == 1
    assert "**cannot tell**" in table  # one seed: no interval
    for png in FIGURES:
        assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _picks(results: dict) -> dict[str, Point]:
    return {name: Point(results["settings"][name]["lr"], results["settings"][name]["beta"])
            for name in results["selection"]}


def test_the_mixture_grid_centres_on_the_instruction_pick_and_second_stages_start_from_sft_s(
        runs: tuple[Path, Path]) -> None:
    work, _ = runs
    results = json.loads((work / "results.json").read_text())
    instruction = results["settings"]["uft_instruction_only"]
    assert {p["beta"] for p in results["selection"]["uft"]["points"]} == {instruction["beta"]}
    assert [p["lr"] for p in results["selection"]["uft"]["points"]][:2] == [instruction["lr"], 3 * instruction["lr"]]
    sft = results["selection"]["sft"]["pick"]
    dpo = results["selection"]["sft_then_dpo"]["pick"]
    recipe = load_recipe(work / "runs" / "sft_then_dpo" / dpo / "seed0" / "recipe.yaml")
    assert recipe.model.init_adapter == str(work.resolve() / "runs" / "sft" / sft / "seed0" / "adapter")
    assert recipe.train.seed == 0 and recipe.train.max_steps == 1


def test_same_inputs_give_the_same_results_and_figures(runs: tuple[Path, Path]) -> None:
    first, second = runs
    for name in ("results.json", *FIGURES):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    tables = [[line for line in (work / "results.md").read_text().splitlines() if line.startswith("|")]
              for work in runs]  # the header names the --work folder
    assert tables[0] == tables[1]


def test_recipes_hold_the_papers_hyperparameters_times_one_factor() -> None:
    """UFT beta 0.01 lr 3e-5; SFT lr 1e-4; DPO/KTO beta 0.03 lr 5e-6; UNA-score beta 0.03 lr 3e-5;
    ORPO lambda 0.1 lr 5e-6; DPO+NLL beta 0.1 alpha 1 lr 5e-6; effective batch 8, 2 epochs, LoRA r=16
    alpha=16 on all 7 projections; lr x 20 throughout (the grids' centres: protocol.py)."""
    expected = {"sft.yaml": ("sft", None, 1e-4), "uft_instruction_only.yaml": ("una_mse", 0.01, 3e-5),
                "uft.yaml": ("una_mse", 0.01, 3e-5), "sft_then_dpo.yaml": ("dpo", 0.03, 5e-6),
                "sft_then_kto.yaml": ("kto", 0.03, 5e-6), "sft_then_una.yaml": ("una_mse", 0.03, 3e-5),
                "orpo.yaml": ("orpo", None, 5e-6), "dpo_nll.yaml": ("dpo_nll", 0.1, 5e-6),
                **{f"{ratio_name(r)}.yaml": ("una_mse", 0.01, 3e-5) for r in PAPER.ratios}}
    for name, (loss, beta, paper_lr) in expected.items():
        recipe = load_recipe(RECIPES / name)
        assert recipe.loss.name == loss and recipe.optim.lr == pytest.approx(K * paper_lr), name
        if beta is not None:
            assert recipe.loss.beta == beta, name
        assert recipe.loss.reference == ("online" if loss in ("sft", "orpo") else "precompute"), name
        assert (recipe.train.batch_size, recipe.train.epochs, recipe.lora.r, recipe.lora.alpha) == (8, 2, 16, 16)
        assert len(recipe.lora.targets) == 7


def test_a_folder_made_for_another_size_is_refused(tmp_path: Path) -> None:
    from uft_miniature.bench import SIZE_FILE, prepare_data
    from uft_miniature.sizes import SIZES

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / SIZE_FILE).write_text("{}")
    with pytest.raises(RuntimeError, match="was made for another benchmark size"):
        prepare_data(tmp_path, SIZES["smoke"].bench, print)


def test_a_figure_uft_did_not_draw_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A figure in --docs that uft did not draw (e.g. one committed by hand) is refused before results.json
    and results.md are written: one line naming it, exit 2, no traceback, nothing written."""
    import uft_miniature.bench as bench

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "reward_vs_kl.png").write_bytes(b"a picture of the user's")
    monkeypatch.setattr(bench, "run_benchmark", lambda work, size: {"selection": {}, "settings": {}, "runs": {}})
    with pytest.raises(SystemExit) as exit_info:
        main(["--size", "smoke", "--work", str(tmp_path / "work"), "--docs", str(docs)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("uft-miniature: error:") and "reward_vs_kl.png" in err
    assert sorted(p.name for p in docs.iterdir()) == ["reward_vs_kl.png"]


def test_the_docs_quote_the_committed_results() -> None:
    """docs/miniature.md quotes the final table and the claims of docs/miniature/results.md line for line,
    and names every selected setting of docs/miniature/results.json, so the reading cannot drift from the run."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    text = (docs / "miniature.md").read_text()
    results = (docs / "miniature" / "results.md").read_text()
    tables = results[results.index("## At the selected settings"):]
    for line in tables.splitlines():
        if line.startswith("| ") and not line.startswith("| claim") and not line.startswith("| method"):
            assert line in text, line
    for stage, chosen in json.loads((docs / "miniature" / "results.json").read_text())["selection"].items():
        assert f"`{stage}` | `{chosen['pick']}`" in text, stage
