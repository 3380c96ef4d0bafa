"""What an evaluation suite needs before a model is loaded: lm-eval's task names, the Python packages
some tasks import (ifeval's, math's) and, on a machine that cannot reach the Hub, the task datasets
in the local Hugging Face cache. Each missing thing is one line (exit 2), so a 7B model is never
loaded for a run that would stop at its first download.

The datasets are read from lm-eval's task index (the task YAMLs, functions unresolved): nothing is
built or downloaded here.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from uft_train.errors import TrainError
from uft_train.suites import Suite

LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow"}
# Datasets the leaderboard tasks read that need the user's Hub login and accepted terms.
GATED = {"Idavidrein/gpqa"}
PIP_LM_EVAL = 'pip install "lm-eval[ifeval,math]==0.4.13"'


class NeedsError(TrainError):
    """Everything a suite lacks, one line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("eval", "\n".join(self.problems))

    def line(self) -> str:
        return "\n".join(self.problems)


def unknown_tasks(names: Iterable[str], index: Mapping[str, Any]) -> list[str]:
    return [n for n in names if n not in index]


def task_datasets(names: Iterable[str], index: Mapping[str, Any]) -> dict[str, list[str]]:
    """Hub dataset repository -> the leaf tasks of `names` that read it (any of its configs)."""
    found: dict[str, list[str]] = {}
    for leaf, cfg in leaf_tasks(names, index):
        path = cfg.get("dataset_path")
        if isinstance(path, str) and path not in LOCAL_BUILDERS and not Path(path).exists():
            found.setdefault(path, []).append(leaf)
    return dict(sorted(found.items()))


def leaf_tasks(names: Iterable[str], index: Mapping[str, Any]) -> Iterable[tuple[str, dict]]:
    """(task name, its config) for every leaf task under `names` (groups and tags expanded)."""
    seen: set[str] = set()
    stack = list(names)[::-1]
    while stack:
        name = stack.pop()
        entry = index.get(name)
        if entry is None or name in seen:
            continue
        seen.add(name)
        kind = entry.kind.name
        if kind == "GROUP":
            children = [c if isinstance(c, str) else c.get("task") or c.get("group") for c in entry.cfg["task"]]
            stack.extend(c for c in reversed(children) if isinstance(c, str))
        elif kind == "TAG":
            stack.extend(sorted(entry.tags, reverse=True))
        else:
            yield name, entry.cfg or {}


def missing_packages(suite: Suite) -> list[str]:
    """One line per Python package a task of `suite` imports and this environment lacks."""
    return [f"{task} needs the Python package {requirement} (not installed): {PIP_LM_EVAL}"
            for module, requirement, task in suite.packages if importlib.util.find_spec(module) is None]


def missing_nltk_data(suite: Suite) -> list[str]:
    """Offline: one line per NLTK resource a task loads that is not installed (lm-eval downloads it online)."""
    if importlib.util.find_spec("nltk") is None:
        return []  # missing_packages names nltk itself
    import nltk

    lines = []
    for task, resource, package in suite.nltk_data:
        try:
            nltk.data.find(resource)
        except LookupError:
            lines.append(f"{task} needs NLTK's {package} data, not installed and not downloadable offline: "
                         f"python -m nltk.downloader {package}")
    return lines


def hub_offline(timeout: float = 3.0) -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or the Hub endpoint's host cannot be reached."""
    if any(os.environ.get(v, "").lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return True
    return False


def in_hub_cache(dataset: str) -> bool:
    """The dataset repository has a snapshot in the Hugging Face Hub cache (where `datasets` keeps the
    files it downloaded, and reads them from offline)."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"datasets--{dataset.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


def offline_problems(datasets: Mapping[str, list[str]]) -> list[str]:
    """Offline: one line per dataset the cache lacks, naming the tasks that read it."""
    lines = []
    for dataset, tasks in datasets.items():
        if in_hub_cache(dataset):
            continue
        shown = ", ".join(tasks[:3]) + (f" and {len(tasks) - 3} more" if len(tasks) > 3 else "")
        gated = " (gated: accept its terms on the Hub and `hf auth login` first)" if dataset in GATED else ""
        lines.append(f"dataset {dataset}{gated}, read by {shown}: not in the Hugging Face cache, and the Hub "
                     "cannot be reached; run once where it can (the datasets are cached), or set HF_HOME to a "
                     "cache that holds them")
    return lines


def check_needs(suite: Suite, index: Mapping[str, Any], *, offline: bool | None = None) -> dict[str, list[str]]:
    """Raise NeedsError with every unknown task, missing package and (offline) missing dataset of
    `suite`; return the Hub datasets it reads (dataset -> tasks)."""
    problems = [f"{name}: no such lm-eval task, group or tag (lm-eval --tasks list shows them)"
                for name in unknown_tasks(suite.tasks, index)]
    problems += missing_packages(suite)
    datasets = task_datasets(suite.tasks, index)
    if hub_offline() if offline is None else offline:
        problems += missing_nltk_data(suite) + offline_problems(datasets)
    if problems:
        raise NeedsError([f"{suite.name}: {p}" for p in problems])
    return datasets
