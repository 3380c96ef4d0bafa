"""uft_train/suites.py and evalneeds.py: the leaderboards' task lists, n-shot and normalisation, the
paper's table, and what a suite needs offline; hand-computed values, no model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from uft_train.evalneeds import NeedsError, check_needs, leaf_tasks, task_datasets
from uft_train.suites import (
    BBH_CHOICES,
    LEADERBOARD_V1,
    LEADERBOARD_V2,
    Column,
    column_score,
    normalise,
    suite_for,
    table,
)

pytest.importorskip("lm_eval.tasks", reason="lm-eval is not installed (pip install -e '.[test]')")


@pytest.fixture(scope="module")
def index() -> dict:
    from uft_train.evaluate import task_manager

    return task_manager(None, defaults=True).task_index  # lm-eval's own, shared with the other eval tests


def test_normalise_maps_the_random_baseline_to_0_and_clips_below_it() -> None:
    assert normalise(0.25, 4) == 0.0
    assert normalise(0.625, 4) == pytest.approx(50.0)  # (0.625 - 0.25) / 0.75
    assert normalise(0.1, 4) == 0.0  # below chance: 0, not negative
    assert normalise(1.0, 10) == pytest.approx(100.0)
    assert normalise(0.37, None) == pytest.approx(37.0)  # generative: x 100


def test_subtasks_are_normalised_each_then_averaged() -> None:
    column = Column("musr", "g", 0, ("acc_norm,none",), subtasks=(("a", 2), ("b", 5), ("c", 3)))
    results = {"a": {"acc_norm,none": 0.75}, "b": {"acc_norm,none": 0.2}, "c": {"acc_norm,none": 0.5}}
    score = column_score(column, results, normalised=True)
    # a: (0.75-0.5)/0.5 = 50; b: at chance = 0; c: (0.5-1/3)/(2/3) = 25
    assert score.normalised == pytest.approx(25.0)
    assert score.raw == pytest.approx((75 + 20 + 50) / 3)
    assert score.parts == pytest.approx({"a": 75.0, "b": 20.0, "c": 50.0})


def test_ifeval_is_the_mean_of_prompt_and_instruction_strict_accuracy() -> None:
    column = next(c for c in LEADERBOARD_V2.columns if c.label == "ifeval")
    results = {"leaderboard_ifeval": {"prompt_level_strict_acc,none": 0.4, "inst_level_strict_acc,none": 0.5,
                                      "prompt_level_loose_acc,none": 0.9}}
    score = column_score(column, results, normalised=True)
    assert score.raw == pytest.approx(45.0) and score.normalised == pytest.approx(45.0)


def test_the_table_has_the_papers_columns_and_a_normalised_row_first() -> None:
    results = {c.task: {m: 0.5 for m in c.metrics} for c in LEADERBOARD_V2.columns}
    results |= {name: {"acc_norm,none": 0.5} for c in LEADERBOARD_V2.columns for name, _ in c.subtasks}
    scores = [column_score(c, results, normalised=True) for c in LEADERBOARD_V2.columns]
    lines = table(LEADERBOARD_V2, [("m", scores)]).splitlines()
    assert lines[0] == "| model | bbh | gpqa | mmlu-pro | musr | ifeval | math-hard | average |"
    gpqa, mmlu_pro = (0.5 - 0.25) / 0.75 * 100, (0.5 - 0.1) / 0.9 * 100
    bbh = sum(normalise(0.5, k) for k in BBH_CHOICES.values()) / len(BBH_CHOICES)
    musr = (normalise(0.5, 2) + normalise(0.5, 5) + normalise(0.5, 3)) / 3
    values = [bbh, gpqa, mmlu_pro, musr, 50.0, 50.0]
    assert lines[2] == "| m (normalised) | " + " | ".join(f"{v:.2f}" for v in values) + f" | {sum(values) / 6:.2f} |"
    assert lines[3] == "| m (raw) | " + " | ".join(["50.00"] * 6) + " | 50.00 |"


def test_v1_has_the_leaderboards_shots_and_metrics() -> None:
    assert [(c.label, c.task, c.shots, c.metrics) for c in LEADERBOARD_V1.columns] == [
        ("gsm8k", "gsm8k", 5, ("exact_match,strict-match",)), ("truthful", "truthfulqa_mc2", 0, ("acc,none",)),
        ("winogrande", "winogrande", 5, ("acc,none",)), ("arc", "arc_challenge", 25, ("acc_norm,none",)),
        ("hellaswag", "hellaswag", 10, ("acc_norm,none",)), ("mmlu", "mmlu", 5, ("acc,none",))]
    assert not LEADERBOARD_V1.normalised and not LEADERBOARD_V1.chat_template


def test_a_task_list_is_a_suite_of_its_own() -> None:
    suite = suite_for("arc_easy, hellaswag", shots=3)
    assert suite.tasks == ["arc_easy", "hellaswag"] and {c.shots for c in suite.columns} == {3}
    score = column_score(suite.columns[0], {"arc_easy": {"acc,none": 0.5, "acc_norm,none": 0.6}}, normalised=False)
    assert score.metrics == ("acc_norm,none",) and score.raw == pytest.approx(60.0)


def test_bbh_choices_are_lm_evals_own(index: dict) -> None:
    """The number of choices of each BBH subtask, read back from lm-eval's YAML (doc_to_choice)."""
    column = next(c for c in LEADERBOARD_V2.columns if c.label == "bbh")
    assert [name for name, _ in column.subtasks] == sorted(index["leaderboard_bbh"].cfg["task"])
    for name, choices in column.subtasks:
        assert len(index[name].cfg["doc_to_choice"]) == choices, name


def test_v2_shots_are_the_task_configs_own(index: dict) -> None:
    for column in LEADERBOARD_V2.columns:
        for leaf, cfg in leaf_tasks([column.task], index):
            assert cfg.get("num_fewshot", 0) == column.shots, leaf


def test_the_datasets_each_leaderboard_reads(index: dict) -> None:
    assert list(task_datasets(LEADERBOARD_V2.tasks, index)) == [
        "DigitalLearningGmbH/MATH-lighteval", "Idavidrein/gpqa", "SaylorTwift/bbh", "TAUR-Lab/MuSR",
        "TIGER-Lab/MMLU-Pro", "wis-k/instruction-following-eval"]
    v1 = task_datasets(LEADERBOARD_V1.tasks, index)
    assert list(v1) == ["Rowan/hellaswag", "allenai/ai2_arc", "allenai/winogrande", "cais/mmlu", "openai/gsm8k",
                        "truthfulqa/truthful_qa"]
    assert len(v1["cais/mmlu"]) == 57  # one task per subject


def test_offline_with_an_empty_cache_names_every_dataset(index: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(NeedsError) as info:
        check_needs(LEADERBOARD_V1, index, offline=True)
    lines = info.value.line().splitlines()
    assert len(lines) == 6 and all(line.startswith("leaderboard-v1: dataset ") for line in lines)
    assert "cais/mmlu, read by mmlu_abstract_algebra, mmlu_anatomy, mmlu_astronomy and 54 more: not in" in lines[3]
    # Online (or cached), the same suite needs nothing more.
    assert check_needs(LEADERBOARD_V1, index, offline=False) == task_datasets(LEADERBOARD_V1.tasks, index)
    (tmp_path / "datasets--openai--gsm8k" / "snapshots" / "abc").mkdir(parents=True)
    with pytest.raises(NeedsError) as info:
        check_needs(LEADERBOARD_V1, index, offline=True)
    assert not any("openai/gsm8k" in line for line in info.value.line().splitlines())


def test_unknown_tasks_are_named(index: dict) -> None:
    with pytest.raises(NeedsError) as info:
        check_needs(suite_for("arc_easy,no_such_task"), index, offline=False)
    assert info.value.line() == ("tasks: no_such_task: no such lm-eval task, group or tag "
                                 "(lm-eval --tasks list shows them)")


def test_missing_nltk_data_is_named_offline_only(index: dict) -> None:
    pytest.importorskip("nltk", reason="nltk is not installed")
    suite = dataclasses.replace(suite_for("arc_easy"), nltk_data=(("arc_easy", "tokenizers/uft_no_such_data", "uft_x"),))
    with pytest.raises(NeedsError) as info:
        check_needs(suite, index, offline=True)
    assert info.value.line().splitlines()[0] == (
        "tasks: arc_easy needs NLTK's uft_x data, not installed and not downloadable offline: "
        "python -m nltk.downloader uft_x")
    check_needs(suite, index, offline=False)  # online, lm-eval downloads it itself
