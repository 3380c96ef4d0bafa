"""The evaluation suites of `uft-train eval` and how their scores become the paper's tables.

Pure data and pure functions (no lm-eval import): which lm-eval tasks a suite runs, with how many
shots, which metric each column of the table reads and how it is normalised.

- `leaderboard-v2`, the UFT paper's Table 1 (the Open LLM Leaderboard v2, lm-eval's `leaderboard_*`
  tasks): bbh (3-shot acc_norm), gpqa (0-shot acc_norm), mmlu-pro (5-shot acc), musr (0-shot
  acc_norm), ifeval (0-shot, the mean of prompt- and instruction-level strict accuracy) and math-hard
  (4-shot exact match). Normalised as the leaderboard does (its "Scores Normalization" page): a
  multiple-choice score maps the random baseline 1/choices to 0 and 1 to 100, clipped at 0, per
  subtask for bbh and musr (then averaged); ifeval and math-hard are x 100.
- `leaderboard-v1`, the paper's Table 2 (the Open LLM Leaderboard v1): gsm8k (5-shot, strict-match
  exact match), truthfulqa mc2 (0-shot), winogrande (5-shot acc), arc-challenge (25-shot acc_norm),
  hellaswag (10-shot acc_norm), mmlu (5-shot acc), x 100; v1 did not normalise.
- `local`: the repository's own two tasks (uft_train/localtasks.py), which run offline.
Any other `--suite` value is a comma-separated list of lm-eval task names (`custom_suite`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean

# Preferred metrics of a task of a custom suite, in order; the first the results hold is its column.
PRIMARY_METRICS = ("acc_norm,none", "acc,none", "exact_match,strict-match", "exact_match,none",
                   "exact_match,flexible-extract", "prompt_level_strict_acc,none")


@dataclass(frozen=True)
class Column:
    """One column of a suite's table: lm-eval `task` (a task or group) run with `shots` examples.

    The raw score is the mean of `metrics` (lm-eval's `metric,filter` keys) on `task`; with
    `subtasks` ((name, choices), ...) it is the mean over the subtasks, each normalised on its own;
    `choices` is the number of answer choices when the whole task is normalised at once."""

    label: str
    task: str
    shots: int | None
    metrics: tuple[str, ...]
    choices: int | None = None
    subtasks: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    columns: tuple[Column, ...]
    normalised: bool = False  # the table's scores are the leaderboard's normalised ones
    chat_template: bool = True  # applied by default when the tokenizer has one
    # Python packages some tasks import: (import name, pip requirement, task).
    packages: tuple[tuple[str, str, str], ...] = ()
    # NLTK data some tasks load, downloaded by lm-eval when online: (task, resource path, package id).
    nltk_data: tuple[tuple[str, str, str], ...] = ()
    local: bool = False  # the repository's own tasks (uft_train/localtasks.py)

    @property
    def tasks(self) -> list[str]:
        return [c.task for c in self.columns]


# Choices per BBH subtask: the length of `doc_to_choice` in lm-eval 0.4.13's leaderboard/bbh_mc YAMLs
# (tests/test_eval_suites.py reads them back).
BBH_CHOICES: dict[str, int] = {
    "boolean_expressions": 2, "causal_judgement": 2, "date_understanding": 6, "disambiguation_qa": 3,
    "formal_fallacies": 2, "geometric_shapes": 11, "hyperbaton": 2, "logical_deduction_five_objects": 5,
    "logical_deduction_seven_objects": 7, "logical_deduction_three_objects": 3, "movie_recommendation": 6,
    "navigate": 2, "object_counting": 19, "penguins_in_a_table": 5, "reasoning_about_colored_objects": 18,
    "ruin_names": 6, "salient_translation_error_detection": 6, "snarks": 2, "sports_understanding": 2,
    "temporal_sequences": 4, "tracking_shuffled_objects_five_objects": 5,
    "tracking_shuffled_objects_seven_objects": 7, "tracking_shuffled_objects_three_objects": 3, "web_of_lies": 2,
}
# The leaderboard's normalisation page: murder mysteries 2 choices, object placements 5, team allocation 3.
MUSR_CHOICES: dict[str, int] = {"murder_mysteries": 2, "object_placements": 5, "team_allocation": 3}

LEADERBOARD_V2 = Suite(
    name="leaderboard-v2", title="Open LLM Leaderboard v2 (UFT paper, Table 1)", normalised=True,
    columns=(
        Column("bbh", "leaderboard_bbh", 3, ("acc_norm,none",),
               subtasks=tuple((f"leaderboard_bbh_{k}", n) for k, n in BBH_CHOICES.items())),
        Column("gpqa", "leaderboard_gpqa", 0, ("acc_norm,none",), choices=4),
        Column("mmlu-pro", "leaderboard_mmlu_pro", 5, ("acc,none",), choices=10),
        Column("musr", "leaderboard_musr", 0, ("acc_norm,none",),
               subtasks=tuple((f"leaderboard_musr_{k}", n) for k, n in MUSR_CHOICES.items())),
        Column("ifeval", "leaderboard_ifeval", 0, ("prompt_level_strict_acc,none", "inst_level_strict_acc,none")),
        Column("math-hard", "leaderboard_math_hard", 4, ("exact_match,none",)),
    ),
    packages=(("langdetect", "langdetect", "leaderboard_ifeval"), ("immutabledict", "immutabledict", "leaderboard_ifeval"),
              ("nltk", "nltk>=3.9.1", "leaderboard_ifeval"), ("sympy", "sympy>=1.12", "leaderboard_math_hard"),
              ("antlr4", "antlr4-python3-runtime==4.11", "leaderboard_math_hard"),
              ("math_verify", "math-verify[antlr4_11_0]", "leaderboard_math_hard")),
    nltk_data=(("leaderboard_ifeval", "tokenizers/punkt_tab", "punkt_tab"),),
)
LEADERBOARD_V1 = Suite(
    name="leaderboard-v1", title="Open LLM Leaderboard v1 (UFT paper, Table 2)", chat_template=False,
    columns=(
        Column("gsm8k", "gsm8k", 5, ("exact_match,strict-match",)),
        Column("truthful", "truthfulqa_mc2", 0, ("acc,none",)),
        Column("winogrande", "winogrande", 5, ("acc,none",)),
        Column("arc", "arc_challenge", 25, ("acc_norm,none",)),
        Column("hellaswag", "hellaswag", 10, ("acc_norm,none",)),
        Column("mmlu", "mmlu", 5, ("acc,none",)),
    ),
)
LOCAL = Suite(
    name="local", title="The repository's local tasks (offline; a check of the pipeline, not of a model)",
    columns=(Column("local-mc", "uft_local_mc", 0, ("acc_norm,none",)),
             Column("local-gen", "uft_local_gen", 0, ("exact_match,none",))),
    local=True,
)
SUITES: dict[str, Suite] = {s.name: s for s in (LEADERBOARD_V2, LEADERBOARD_V1, LOCAL)}


def suite_for(spec: str, shots: int | None = None) -> Suite:
    """The named suite, or a custom one of the comma-separated task names `spec` (each run with
    `shots` examples, None: the task's own number)."""
    if spec in SUITES:
        return SUITES[spec]
    names = [t.strip() for t in spec.split(",") if t.strip()]
    return Suite(name="tasks", title=f"lm-eval tasks {', '.join(names)}",
                 columns=tuple(Column(n, n, shots, ()) for n in names))


def normalise(value: float, choices: int | None) -> float:
    """The leaderboard's normalisation, in percent: the random baseline 1/choices -> 0, 1 -> 100, and
    a score below the baseline -> 0. `choices` None: no baseline (x 100)."""
    lower = 0.0 if choices is None else 1.0 / choices
    return max(0.0, (value - lower) / (1.0 - lower)) * 100.0


@dataclass
class Score:
    label: str
    task: str
    metrics: tuple[str, ...]
    raw: float  # percent, as lm-eval reports it x 100
    normalised: float | None  # percent; None where the suite does not normalise
    parts: dict[str, float] = field(default_factory=dict)  # subtask -> raw percent


def column_score(column: Column, results: Mapping[str, Mapping[str, object]], *, normalised: bool) -> Score:
    """`column`'s score from lm-eval's `results` (task -> {metric,filter: value})."""
    metrics = column.metrics or (primary_metric(results[column.task]),)
    if column.subtasks:
        raws = {name: _mean(results[name], metrics) for name, _ in column.subtasks}
        norm = fmean(normalise(raws[name], k) for name, k in column.subtasks)
        return Score(column.label, column.task, metrics, fmean(raws.values()) * 100, norm if normalised else None,
                     {name: v * 100 for name, v in raws.items()})
    raw = _mean(results[column.task], metrics)
    return Score(column.label, column.task, metrics, raw * 100, normalise(raw, column.choices) if normalised else None)


def primary_metric(task_results: Mapping[str, object]) -> str:
    """The metric a custom suite's column shows: the first of PRIMARY_METRICS the task reports, else
    its first numeric metric that is not a standard error."""
    for key in PRIMARY_METRICS:
        if isinstance(task_results.get(key), (int, float)):
            return key
    for key, value in task_results.items():
        if "," in key and "_stderr" not in key and isinstance(value, (int, float)):
            return key
    raise KeyError(f"no numeric metric among {sorted(task_results)}")


def _mean(task_results: Mapping[str, object], metrics: Sequence[str]) -> float:
    values = []
    for m in metrics:
        value = task_results[m]
        if not isinstance(value, (int, float)):
            raise KeyError(f"{m} is {value!r}, not a number")
        values.append(float(value))
    return fmean(values)


def table(suite: Suite, models: Sequence[tuple[str, Sequence[Score]]]) -> str:
    """Models' scores as one markdown table in the paper's layout: a column per benchmark and the
    average, a row per model; where the suite normalises, every model's normalised row first, then
    the raw rows."""
    labels = [s.label for s in models[0][1]]
    head = "| model | " + " | ".join(labels) + " | average |"
    rule = "|---|" + "---:|" * (len(labels) + 1)
    rows = []
    if suite.normalised:
        rows += [_row(f"{name} (normalised)", [s.normalised or 0.0 for s in scores]) for name, scores in models]
    rows += [_row(f"{name}{' (raw)' if suite.normalised else ''}", [s.raw for s in scores]) for name, scores in models]
    return "\n".join([head, rule, *rows])


def average(values: Sequence[float]) -> float:
    return fmean(values) if values else float("nan")


def _row(name: str, values: Sequence[float]) -> str:
    return f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {average(values):.2f} |"
