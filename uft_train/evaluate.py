"""`uft-train eval RUN_OR_MODEL --suite SUITE`: lm-evaluation-harness on a run or a model, scored and
tabled as in the UFT paper (uft_train/suites.py).

RUN_OR_MODEL is a run folder (its base model loaded as training loaded it, its adapter applied
unmerged, its saved tokenizer and chat template), a model folder (a `uft-train export`, or any
transformers checkpoint, safetensors only; `--adapter` applies a LoRA adapter through lm-eval's
`peft=`) or a Hub id. Before any model is loaded the suite's needs are checked (evalneeds.py).

Outputs, in one folder written whole or not at all (default RUN/eval/SUITE; for a model, -o):
  eval.json       the suite, the model, the settings, every column's raw and normalised score, versions
  results.md      the table in the paper's layout
  lm_eval.json    lm-eval's own results, configs and n-shot per task (timings left out)
  samples/TASK.jsonl  every request lm-eval sent and what the model answered
The same model, suite, settings and library versions give the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uft_train.errors import TrainError
from uft_train.evalneeds import NeedsError, check_needs
from uft_train.export import is_export
from uft_train.suites import Score, Suite, average, column_score, suite_for, table
from uftdata import __version__
from uftdata.atomic import atomic_path, check_output
from uftdata.mixout import sha256_file

if TYPE_CHECKING:
    import torch
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedTokenizerBase

EVAL_FILE = "eval.json"
EVAL_FIX = "Pass --overwrite to replace this earlier evaluation, or choose another -o."
# lm-eval result fields that change from run to run (times, hosts); not written.
UNSTABLE = {"date", "start_time", "end_time", "total_evaluation_time_seconds", "pretty_env_info", "git_hash",
            "transformers_version", "upper_git_hash", "model_source", "model_name_sanitized", "task_hashes"}


@dataclass(frozen=True)
class EvalOptions:
    suite: str = "local"
    out: Path | None = None
    shots: int | None = None  # custom task lists only; a named suite fixes its own
    limit: float | None = None  # examples per task (testing only: the scores are then not the suite's)
    batch_size: int | str = 8  # or "auto"
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # model folders and Hub ids; None: the checkpoint's own ("auto")
    chat_template: bool | None = None  # None: the suite's default, when the tokenizer has a template
    adapter: Path | None = None  # a LoRA adapter over a model folder or Hub id (lm-eval's peft=)
    include: Path | None = None  # a folder of the user's own lm-eval task YAMLs
    trust_remote_code: bool = False
    overwrite: bool = False


@dataclass(frozen=True)
class Target:
    kind: str  # "run" or "model"
    name: str  # what the table calls it
    path: str


def resolve_target(spec: str) -> Target:
    """A run folder, a model folder, or else a Hub id."""
    path = Path(spec)
    if (path / "adapter" / "adapter_config.json").is_file() and (path / "recipe.yaml").is_file():
        return Target("run", path.resolve().name, str(path))
    if (path / "config.json").is_file():
        return Target("model", path.resolve().name, str(path))
    if path.exists() or spec.startswith((".", "/", "~")):
        raise TrainError(spec, "is neither a finished run folder (adapter/, recipe.yaml) nor a model folder "
                               "(config.json)", fix="Pass a run folder, a `uft-train export` folder or a Hub id.")
    return Target("model", spec.rsplit("/", 1)[-1], spec)


def default_out(target: Target, suite: Suite, out: Path | None) -> Path:
    if out is not None:
        return out
    if target.kind == "run":
        return Path(target.path) / "eval" / suite.name
    raise TrainError("-o", "is required when evaluating a model folder or a Hub id",
                     fix="Name a new folder for the evaluation, e.g. -o eval/MODEL.")


def evaluate(spec: str, options: EvalOptions) -> tuple[Path, dict]:
    """Evaluate `spec` on `options.suite`; returns the output folder and eval.json's dict."""
    try:
        import lm_eval  # noqa: F401 (seconds to import)
    except ModuleNotFoundError as error:
        raise TrainError("uft-train eval", f"needs lm-evaluation-harness ({error.name} is not installed)",
                         fix='pip install "lm-eval[ifeval,math]==0.4.13" (or the repository\'s extra: pip install -e ".[eval]")') from error

    suite = suite_for(options.suite, options.shots)
    target = resolve_target(spec)
    if target.kind == "run" and options.adapter is not None:
        raise TrainError("--adapter", "applies to a model folder or Hub id; a run folder brings its own adapter")
    out = default_out(target, suite, options.out)
    inputs = [Path(target.path)] if target.kind == "model" and Path(target.path).exists() else []
    if target.kind == "run":
        inputs = [Path(target.path) / p for p in ("adapter", "tokenizer", "recipe.yaml")]
    inputs += [options.adapter] if options.adapter is not None else []
    check_output(out, overwrite=options.overwrite, owned=is_eval, inputs=inputs, fix=EVAL_FIX)  # before the model
    manager = task_manager(str(options.include) if options.include else None, defaults=not suite.local)
    datasets = {} if suite.local else check_needs(suite, manager.task_index)
    started = time.monotonic()
    lm, tokenizer = load_lm(target, options)
    chat = use_chat_template(suite, options, tokenizer)
    results, samples, raw = run_suite(lm, suite, manager, options, chat=chat)
    scores = [column_score(c, results, normalised=suite.normalised) for c in suite.columns]
    summary = eval_summary(suite, target, options, scores, chat, tokenizer, datasets, raw)
    with atomic_path(out, overwrite=options.overwrite, owned=is_eval, inputs=inputs, fix=EVAL_FIX) as tmp:
        write_outputs(tmp, suite, target, summary, scores, raw, samples)
    summary["seconds"] = round(time.monotonic() - started, 1)  # printed, not written: not reproducible
    return out, summary


@functools.lru_cache(maxsize=4)
def task_manager(include: str | None, *, defaults: bool) -> TaskManager:
    """lm-eval's task index (seconds to build: kept for the process). The local suite's tasks are inline
    configs and need none of lm-eval's own."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include, include_defaults=defaults)


def is_eval(folder: Path) -> bool:
    return (folder / EVAL_FILE).is_file()


def load_lm(target: Target, options: EvalOptions) -> tuple[LM, PreTrainedTokenizerBase]:
    """lm-eval's HFLM over the target, and its tokenizer."""
    import torch
    from lm_eval.models.huggingface import HFLM

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if target.kind == "run":
        model, tokenizer = load_run(Path(target.path), device)
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=options.batch_size), tokenizer
    try:
        lm = HFLM(pretrained=target.path, peft=str(options.adapter) if options.adapter else None, device=device,
                  dtype=options.dtype or "auto", batch_size=options.batch_size,
                  trust_remote_code=options.trust_remote_code, use_safetensors=True)
    except OSError as error:  # transformers' "not a valid model identifier", offline, no safetensors
        raise TrainError(target.path, f"could not be loaded: {str(error).splitlines()[0]}",
                         fix="Check the name, the network (or HF_HUB_OFFLINE with a cached copy) and that it "
                             "holds safetensors weights.") from error
    return lm, lm.tokenizer


def load_run(run_dir: Path, device: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The run's base model as training loaded it, with its adapter (not merged), in eval mode."""
    from peft import PeftModel

    from uft_train.config import load_recipe
    from uft_train.model import load_tokenizer_and_model, quiet_peft

    recipe = load_recipe(run_dir / "recipe.yaml")
    # Evaluation needs no training kernel (flash attention needs a GPU and its package).
    recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, attn_implementation="sdpa"))
    tokenizer, base = load_tokenizer_and_model(recipe, run_dir / "tokenizer")
    with quiet_peft():
        model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    return model.to(device).eval(), tokenizer


def use_chat_template(suite: Suite, options: EvalOptions, tokenizer: PreTrainedTokenizerBase) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if options.chat_template and not has:
        raise TrainError("--chat-template", "was asked for, but the tokenizer has no chat template",
                         fix="Drop --chat-template, or evaluate a run or export that saved one.")
    return has and (suite.chat_template if options.chat_template is None else options.chat_template)


def run_suite(lm: LM, suite: Suite, manager: TaskManager, options: EvalOptions, *, chat: bool,
              ) -> tuple[dict[str, dict], dict[str, list], dict[str, Any]]:
    """lm-eval over the suite's tasks, one `simple_evaluate` per number of shots; returns the merged
    results (task -> metrics), samples (task -> records) and lm-eval's other fields per task."""
    import lm_eval

    from uft_train.localtasks import local_tasks

    specs: dict[int | None, list[Any]] = {}
    local = local_tasks() if suite.local else {}
    for column in suite.columns:
        specs.setdefault(column.shots, []).append(local.get(column.task, column.task))
    samples: dict[str, list] = {}
    raw: dict[str, Any] = {key: {} for key in ("results", "groups", "group_subtasks", "configs", "n-shot",
                                                "versions", "n-samples", "higher_is_better")}
    for shots, tasks in specs.items():
        out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=shots, task_manager=manager,
                                      apply_chat_template=chat, fewshot_as_multiturn=chat, limit=options.limit,
                                      log_samples=True)
        if out is None:  # only on ranks other than 0 of a distributed run, which we never start
            raise TrainError("lm-eval", "returned no results")
        samples.update(out["samples"])
        for key in raw:
            raw[key].update(out.get(key) or {})
    return raw["results"], samples, raw


def eval_summary(suite: Suite, target: Target, options: EvalOptions, scores: list[Score], chat: bool,
                 tokenizer: PreTrainedTokenizerBase, datasets: dict[str, list[str]], raw: dict[str, Any]) -> dict:
    import lm_eval
    import peft
    import torch
    import transformers

    template = getattr(tokenizer, "chat_template", None) if chat else None
    normalised = [s.normalised for s in scores if s.normalised is not None]
    return {
        "uft_eval_version": 1, "suite": suite.name, "title": suite.title, "tasks": suite.tasks,
        "model": {"kind": target.kind, "name": target.name, "path": target.path,
                  "adapter": str(options.adapter) if options.adapter else None, **_weights(target)},
        "chat_template": {"applied": chat,
                          "sha256": hashlib.sha256(template.encode()).hexdigest() if template else None},
        "limit": options.limit, "batch_size": options.batch_size, "n-shot": raw["n-shot"],
        "columns": [{**dataclasses.asdict(s), "shots": c.shots if c.shots is not None else raw["n-shot"].get(c.task)}
                    for s, c in zip(scores, suite.columns)],
        "average": {"raw": average([s.raw for s in scores]),
                    "normalised": average(normalised) if suite.normalised else None},
        "datasets": datasets,
        "versions": {"uft": __version__, "lm_eval": lm_eval.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
    }


def _weights(target: Target) -> dict:
    """What ties the scores to weights: a run's adapter hash; a `uft-train export`'s run and adapter hash."""
    path = Path(target.path)
    if target.kind == "run":
        return {"adapter_sha256": sha256_file(path / "adapter" / "adapter_model.safetensors")}
    if not is_export(path):
        return {}
    return {"export": json.loads((path / "uft_export.json").read_text(encoding="utf-8"))}


def write_outputs(folder: Path, suite: Suite, target: Target, summary: dict, scores: list[Score],
                  raw: dict[str, Any], samples: dict[str, list]) -> None:
    folder.mkdir(parents=True)
    (folder / "samples").mkdir()
    for task, records in sorted(samples.items()):
        lines = (_stable_json(r, indent=None) for r in records)
        (folder / "samples" / f"{task}.jsonl").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    stable = {k: v for k, v in raw.items() if k not in UNSTABLE}
    (folder / "lm_eval.json").write_text(_stable_json(stable) + "\n", encoding="utf-8")
    (folder / "results.md").write_text(results_markdown(suite, target, summary, scores), encoding="utf-8")
    # Written last: a folder holding it is a finished evaluation.
    (folder / EVAL_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def results_markdown(suite: Suite, target: Target, summary: dict, scores: list[Score]) -> str:
    chat = "applied" if summary["chat_template"]["applied"] else "not applied"
    shots = ", ".join(f"{c['label']} {c['shots']}" for c in summary["columns"])
    metrics = ", ".join(f"{s.label} {' + '.join(s.metrics)}" for s in scores)
    lines = [f"# {suite.title}", "", table(suite, [(target.name, scores)]), "",
             f"lm-eval {summary['versions']['lm_eval']}; chat template {chat}; n-shot: {shots}; metrics: {metrics}."]
    if suite.normalised:
        lines.append("Normalised as the Open LLM Leaderboard v2 does: (score - 1/choices) / (1 - 1/choices) x 100, "
                     "clipped at 0, per subtask for bbh and musr.")
    if summary["limit"] is not None:
        lines.append(f"**limit {summary['limit']}: only part of each task was run; not the suite's scores.**")
    return "\n".join(lines) + "\n"


def _stable_json(value: object, indent: int | None = 2) -> str:
    """JSON with lm-eval's non-JSON values (functions, numpy, tensors) as strings, memory addresses out."""
    text = json.dumps(value, indent=indent, sort_keys=True, default=str, ensure_ascii=False)
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def report(out: Path, summary: dict) -> str:
    """What `uft-train eval` prints: the table, the outputs and the time."""
    table_text = (out / "results.md").read_text(encoding="utf-8").rstrip()
    return f"{table_text}\n\nuft-train eval: wrote {out} ({summary['seconds']:.1f} s)"


__all__ = ["EvalOptions", "NeedsError", "evaluate", "report"]
