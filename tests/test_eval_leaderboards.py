"""`uft-train eval --suite leaderboard-v2 | leaderboard-v1` end to end on lm-eval's real task configs,
offline: only the dataset download is replaced, by stand-in records in each dataset's fields
(tests/eval_standins.py). What this pins: every task of both suites builds, runs with the suite's
n-shot and chat-template setting, reports the metric keys the table reads, and the table's numbers
are lm-eval's results put through the leaderboard's normalisation. The scores themselves mean nothing."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eval_standins import load_standin
from test_train_loop import tiny_recipe

from uft_train.suites import BBH_CHOICES, LEADERBOARD_V1, LEADERBOARD_V2, MUSR_CHOICES, Suite, normalise
from uft_train.train import train

lm_eval_task = pytest.importorskip("lm_eval.api.task", reason="lm-eval is not installed (pip install -e '.[test]')")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-step tiny run whose positions reach 4096 (math-hard generates up to 1024 tokens after its
    4-shot prompt)."""
    recipe = tiny_recipe(mixture, tmp_path_factory.mktemp("lb") / "run", "train.max_steps=1",
                         "model.tiny.max_position_embeddings=4096")
    with contextlib.redirect_stdout(io.StringIO()):
        return train(recipe)


@pytest.fixture(scope="module")
def standins() -> Iterator[None]:
    import uft_train.evalneeds

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lm_eval_task.datasets, "load_dataset", load_standin)
        patch.setattr(uft_train.evalneeds, "hub_offline", lambda timeout=3.0: False)
        yield


def run_suite(suite: Suite, run_dir: Path, out: Path) -> tuple[dict, dict]:
    from uft_train.evaluate import EvalOptions, evaluate

    evaluate(str(run_dir), EvalOptions(suite=suite.name, limit=1, batch_size=16, out=out, device="cpu"))
    return (json.loads((out / "eval.json").read_text()), json.loads((out / "lm_eval.json").read_text()))


def leaves(lm: dict, task: str) -> list[str]:
    """The leaf tasks under `task` in lm-eval's own group listing."""
    children = lm["group_subtasks"].get(task)
    return [leaf for child in children for leaf in leaves(lm, child)] if children else [task]


def check_shots_and_samples(suite: Suite, summary: dict, lm: dict, out: Path) -> None:
    for column, entry in zip(suite.columns, summary["columns"]):
        assert entry["shots"] == column.shots
        for leaf in leaves(lm, column.task):
            assert lm["n-shot"][leaf] == column.shots, leaf
            assert lm["n-samples"][leaf]["effective"] == 1, leaf
            assert (out / "samples" / f"{leaf}.jsonl").is_file(), leaf


@pytest.mark.usefixtures("standins")
def test_leaderboard_v2_runs_every_task_and_normalises_lm_evals_results(run_dir: Path, tmp_path: Path) -> None:
    summary, lm = run_suite(LEADERBOARD_V2, run_dir, tmp_path / "v2")
    results = lm["results"]
    check_shots_and_samples(LEADERBOARD_V2, summary, lm, tmp_path / "v2")
    assert len(leaves(lm, "leaderboard_bbh")) == 24 and len(leaves(lm, "leaderboard_math_hard")) == 7
    bbh = [results[f"leaderboard_bbh_{k}"]["acc_norm,none"] for k in BBH_CHOICES]
    musr = [results[f"leaderboard_musr_{k}"]["acc_norm,none"] for k in MUSR_CHOICES]
    ifeval = results["leaderboard_ifeval"]
    expected = {
        "bbh": sum(normalise(v, k) for v, k in zip(bbh, BBH_CHOICES.values())) / 24,
        "gpqa": normalise(results["leaderboard_gpqa"]["acc_norm,none"], 4),
        "mmlu-pro": normalise(results["leaderboard_mmlu_pro"]["acc,none"], 10),
        "musr": sum(normalise(v, k) for v, k in zip(musr, MUSR_CHOICES.values())) / 3,
        "ifeval": (ifeval["prompt_level_strict_acc,none"] + ifeval["inst_level_strict_acc,none"]) / 2 * 100,
        "math-hard": results["leaderboard_math_hard"]["exact_match,none"] * 100,
    }
    assert {c["label"]: c["normalised"] for c in summary["columns"]} == pytest.approx(expected)
    assert summary["average"]["normalised"] == pytest.approx(sum(expected.values()) / 6)
    # Chat template on, few-shot examples as turns: bbh's 3 shots are 3 earlier user/assistant turns.
    assert summary["chat_template"]["applied"] is True
    first = json.loads((tmp_path / "v2" / "samples" / "leaderboard_bbh_navigate.jsonl").read_text().splitlines()[0])
    assert first["arguments"][0][0].count("<|user|>") == 4
    table = (tmp_path / "v2" / "results.md").read_text()
    assert "| model | bbh | gpqa | mmlu-pro | musr | ifeval | math-hard | average |" in table
    assert "**limit 1: only part of each task was run; not the suite's scores.**" in table


@pytest.mark.usefixtures("standins")
def test_leaderboard_v1_runs_every_task_with_its_shots_and_no_template(run_dir: Path, tmp_path: Path) -> None:
    summary, lm = run_suite(LEADERBOARD_V1, run_dir, tmp_path / "v1")
    results = lm["results"]
    check_shots_and_samples(LEADERBOARD_V1, summary, lm, tmp_path / "v1")
    assert len(leaves(lm, "mmlu")) == 57
    expected = {"gsm8k": results["gsm8k"]["exact_match,strict-match"], "truthful": results["truthfulqa_mc2"]["acc,none"],
                "winogrande": results["winogrande"]["acc,none"], "arc": results["arc_challenge"]["acc_norm,none"],
                "hellaswag": results["hellaswag"]["acc_norm,none"], "mmlu": results["mmlu"]["acc,none"]}
    assert {c["label"]: c["raw"] for c in summary["columns"]} == pytest.approx({k: v * 100 for k, v in expected.items()})
    assert all(c["normalised"] is None for c in summary["columns"])
    assert summary["chat_template"]["applied"] is False
    arc = json.loads((tmp_path / "v1" / "samples" / "arc_challenge.jsonl").read_text().splitlines()[0])
    context = arc["arguments"][0][0]
    assert "<|user|>" not in context and context.count("Question:") == 26  # 25 shots + the question
