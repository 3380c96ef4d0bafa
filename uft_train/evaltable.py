"""`uft-train eval-table --suite SUITE RUN_OR_EVAL ...`: finished evaluations of several runs or models
side by side, one row each, in the paper's layout (the SFT, DPO, UFT ... rows of its Tables 1 and 2).

Reads only `eval.json` files that `uft-train eval` wrote (RUN/eval/SUITE/eval.json, or an evaluation
folder's own); evaluates nothing. Evaluations of different suites or task lists are refused, and an
evaluation run with --limit is marked in its row's name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from uft_train.errors import TrainError
from uft_train.evaluate import EVAL_FILE
from uft_train.suites import Score, suite_for, table


def eval_file(path: Path, suite: str) -> Path:
    """The eval.json of a run folder's `suite` evaluation, or of an evaluation folder."""
    for candidate in (path / EVAL_FILE, path / "eval" / suite / EVAL_FILE):
        if candidate.is_file():
            return candidate
    raise TrainError(str(path), f"holds no finished {suite} evaluation (no {EVAL_FILE} there or in eval/{suite}/)",
                     fix=f"Evaluate it first: uft-train eval {path} --suite {suite}")


def read_eval(path: Path, suite: str) -> dict:
    file = eval_file(path, suite)
    try:
        summary = json.loads(file.read_text(encoding="utf-8"))
        summary["columns"] = [Score(**{f.name: c[f.name] for f in dataclasses.fields(Score)}) for c in summary["columns"]]
    except (ValueError, KeyError, TypeError) as error:
        raise TrainError(str(file), f"is not an evaluation uft-train eval wrote ({error})") from error
    wanted = suite_for(suite)
    if summary.get("suite") != wanted.name or (wanted.name == "tasks" and summary.get("tasks") != wanted.tasks):
        raise TrainError(str(file), "is an evaluation of another suite", got=summary.get("suite"), expected=suite)
    return summary


def comparison(paths: Sequence[Path], suite: str) -> str:
    """The suite's table with a row per evaluation (its model's name, `(limit N)` when partial)."""
    evals = [read_eval(p, suite) for p in paths]
    labels = [s.label for s in evals[0]["columns"]]
    for path, summary in zip(paths, evals):
        if [s.label for s in summary["columns"]] != labels:
            raise TrainError(str(path), "has other columns than the first evaluation",
                             got=[s.label for s in summary["columns"]], expected=", ".join(labels))
    names = [_name(summary) for summary in evals]
    if len(set(names)) < len(names):  # two runs in folders of the same name: the paths tell them apart
        names = [f"{path}{name.removeprefix(summary['model']['name'])}" for path, name, summary in zip(paths, names, evals)]
    rows = list(zip(names, [summary["columns"] for summary in evals]))
    definition = suite_for(suite)
    return f"# {definition.title}\n\n{table(definition, rows)}\n"


def _name(summary: dict) -> str:
    limit = summary.get("limit")
    return summary["model"]["name"] + (f" (limit {limit:g})" if limit is not None else "")
