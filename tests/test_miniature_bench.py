"""The whole miniature benchmark at its smoke size (one step per run, a 12-entity world): every
method's recipe builds and trains through uftdata and uft-train, every run is evaluated, and the
table and figures are written; twice, in two folders, with byte-identical results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uft_miniature.cli import main
from uft_miniature.methods import GRID, METHODS, RECIPES
from uft_train.config import load_recipe


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    for work in (first, second):
        main(["--size", "smoke", "--work", str(work)])
    return first, second


def test_every_method_is_trained_evaluated_and_tabled(runs: tuple[Path, Path]) -> None:
    work, _ = runs
    results = json.loads((work / "results.json").read_text())
    names = [m.name for m in (*METHODS, *GRID)]
    assert set(results["runs"]) == set(names)
    for name in names:
        metrics = results["runs"][name]["0"]
        assert {"accuracy", "reward", "perplexity", "fact_recall", "kl"} <= set(metrics)
        if name != "base":
            assert (work / "runs" / name / "seed0" / "adapter" / "adapter_model.safetensors").is_file()
    assert results["runs"]["base"]["0"]["kl"] == 0.0  # the base against itself
    table = (work / "results.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == len(names) + 1  # header + one row per method
    for png in ("ratio_sweep.png", "reward_vs_kl.png"):
        assert (work / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_stages_start_from_their_seed_s_first_stage(runs: tuple[Path, Path]) -> None:
    work, _ = runs
    recipe = load_recipe(work / "runs" / "sft_then_dpo" / "seed0" / "recipe.yaml")
    assert recipe.model.init_adapter == str(work.resolve() / "runs" / "sft" / "seed0" / "adapter")
    assert recipe.train.seed == 0 and recipe.train.max_steps == 1


def test_same_inputs_give_the_same_table_and_figures(runs: tuple[Path, Path]) -> None:
    first, second = runs
    for name in ("results.json", "ratio_sweep.png", "reward_vs_kl.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    tables = [[line for line in (work / "results.md").read_text().splitlines() if line.startswith("|")]
              for work in runs]  # the header names the --work folder
    assert tables[0] == tables[1]


def test_recipes_hold_the_papers_hyperparameters_times_one_factor() -> None:
    """UFT beta 0.01 lr 3e-5; SFT lr 1e-4; DPO/KTO beta 0.03 lr 5e-6; UNA-score beta 0.03 lr 3e-5;
    effective batch 8, 2 epochs, LoRA r=16 alpha=16 on all 7 projections; lr x 20 throughout."""
    expected = {"sft.yaml": ("sft", None, 1e-4), "uft_instruction_only.yaml": ("una_mse", 0.01, 3e-5),
                "uft.yaml": ("una_mse", 0.01, 3e-5), "sft_then_dpo.yaml": ("dpo", 0.03, 5e-6),
                "sft_then_kto.yaml": ("kto", 0.03, 5e-6), "sft_then_una.yaml": ("una_mse", 0.03, 3e-5),
                **{m.recipe: ("una_mse", 0.01, 3e-5) for m in GRID}}
    for name, (loss, beta, paper_lr) in expected.items():
        recipe = load_recipe(RECIPES / name)
        assert recipe.loss.name == loss and recipe.optim.lr == pytest.approx(20 * paper_lr), name
        if beta is not None:
            assert recipe.loss.beta == beta, name
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
    monkeypatch.setattr(bench, "run_benchmark", lambda work, size: {})
    with pytest.raises(SystemExit) as exit_info:
        main(["--size", "smoke", "--work", str(tmp_path / "work"), "--docs", str(docs)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("uft-miniature: error:") and "reward_vs_kl.png" in err
    assert sorted(p.name for p in docs.iterdir()) == ["reward_vs_kl.png"]
