"""LLaMA-Factory's own v0 data pipeline on a `uftdata export --to llamafactory` folder.

Runs in .venv-lf (scripts/llamafactory_check.sh builds it; versions and why in
scripts/llamafactory-constraints.txt), never in the project's .venv. For each stage it does what
LLaMA-Factory's train/{sft,dpo,kto}/workflow.py does before training: `get_train_args`,
`load_tokenizer`, `get_template_and_fix_tokenizer`, `get_dataset` (stage sft, rm for DPO, kto), with
the export's dataset_info.json, the train file as `dataset` and the test file as `eval_dataset`.
No `template` is given, so LLaMA-Factory parses it from the tokenizer's chat template (the project's
`<|role|>content<|end|>`, the format the export is meant to be trained in). cutoff_len is set high
enough that nothing is truncated.

Then, for every example LLaMA-Factory yields, against the jsonl row it came from (rows are matched in
order; LLaMA-Factory may only drop rows): the input ids are the tokenizer's encoding of the row's
messages rendered by that chat template; the masked (IGNORE_INDEX) prefix decodes to the rendered
prompt with its generation prompt; each run of labels equals the input ids under it and decodes to a
trained assistant message's content + `<|end|>`. sft trains on every assistant turn by default and
only on the last (the completion) with `mask_history: true`; both are checked. dpo: chosen_* and
rejected_* against messages + chosen / rejected. kto: kto_tags equal the row's label, and the KL
example i is prompt i with the completion of row i-1 (LLaMA-Factory's shift within a map batch).
Exit 0 only if every count and every example matches, 1 if not, 3 on an unexpected error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
from transformers import PreTrainedTokenizerBase

END = "<|end|>"
CUTOFF_LEN = 1 << 20
SHOW_PROBLEMS = 3


@dataclass(frozen=True)
class Run:
    """One get_dataset call: our export stage, LLaMA-Factory's finetuning and data stages, extra args."""

    name: str
    export_stage: str
    lf_stage: str
    data_stage: str
    extra: dict[str, Any] = field(default_factory=dict)


RUNS = (
    Run("sft", "sft", "sft", "sft"),
    Run("sft mask_history", "sft", "sft", "sft", {"mask_history": True}),
    Run("dpo", "dpo", "dpo", "rm"),
    Run("kto", "kto", "kto", "kto"),
)


@dataclass
class Result:
    run: str
    split: str
    exported: int
    lines: int
    produced: int
    checked: int = 0
    mismatches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exported == self.lines == self.produced == self.checked and not self.problems


class Checker:
    """Expected encodings of conversations, from the tokenizer LLaMA-Factory loaded."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> None:
        self.tok = tokenizer
        self.batch_size = batch_size  # preprocessing_batch_size: the KL shift wraps within each map batch

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def example(self, ids: list[int], labels: list[int], messages: list[dict], trained: list[int]) -> list[str]:
        """Problems of one encoded conversation; `trained`: indices of the messages with labels."""
        problems = []
        if ids != self.encode(self.render(messages)):
            problems.append(f"input_ids decode to {self.decode(ids)!r}, expected {self.render(messages)!r}")
        if len(labels) != len(ids):
            return [*problems, f"{len(labels)} labels for {len(ids)} input_ids"]
        runs = _label_runs(labels)
        if any(labels[i] != ids[i] for start, stop in runs for i in range(start, stop)):
            problems.append("a label differs from the input_id under it")
        got = [self.decode(labels[start:stop]) for start, stop in runs]
        want = [messages[i]["content"] + END for i in trained]
        if got != want:
            problems.append(f"labels decode to {got!r}, expected {want!r}")
        prompt = self.render(messages[: trained[0]], generation_prompt=True)
        if runs and self.decode(ids[: runs[0][0]]) != prompt:
            problems.append(f"masked prompt decodes to {self.decode(ids[: runs[0][0]])!r}, expected {prompt!r}")
        return problems


def _label_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of labels that are not IGNORE_INDEX."""
    runs: list[tuple[int, int]] = []
    for i, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _assistant_turns(messages: list[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m["role"] == "assistant"]


def check_sft(c: Checker, ex: dict, row: dict, rows: list[dict], i: int, last_only: bool) -> list[str]:
    messages = row["messages"]
    trained = [len(messages) - 1] if last_only else _assistant_turns(messages)
    return c.example(ex["input_ids"], ex["labels"], messages, trained)


def check_dpo(c: Checker, ex: dict, row: dict, rows: list[dict], i: int, last_only: bool) -> list[str]:
    problems = []
    for side in ("chosen", "rejected"):
        messages = [*row["messages"], row[side]]
        found = c.example(ex[f"{side}_input_ids"], ex[f"{side}_labels"], messages, [len(messages) - 1])
        problems += [f"{side}: {p}" for p in found]
    return problems


def check_kto(c: Checker, ex: dict, row: dict, rows: list[dict], i: int, last_only: bool) -> list[str]:
    messages = row["messages"]
    problems = c.example(ex["input_ids"], ex["labels"], messages, [len(messages) - 1])
    if ex["kto_tags"] is not row["label"]:
        problems.append(f"kto_tag {ex['kto_tags']!r}, the export's label is {row['label']!r}")
    start = i - i % c.batch_size
    k = i - 1 if i > start else min(start + c.batch_size, len(rows)) - 1
    kl = [*messages[:-1], rows[k]["messages"][-1]]
    problems += [f"KL: {p}" for p in c.example(ex["kl_input_ids"], ex["kl_labels"], kl, [len(kl) - 1])]
    return problems


CHECKS: dict[str, Callable[..., list[str]]] = {"sft": check_sft, "dpo": check_dpo, "kto": check_kto}
FIRST_IDS = {"sft": "input_ids", "dpo": "chosen_input_ids", "kto": "input_ids"}


def _match(c: Checker, stage: str, produced: list[dict], rows: list[dict]) -> list[int | None]:
    """For each produced example, the index of its row: in order, the next row whose encoding it has."""
    if len(produced) == len(rows):
        return list(range(len(rows)))
    key = FIRST_IDS[stage]
    matched: list[int | None] = []
    j = 0
    for ex in produced:
        while j < len(rows) and ex[key] != c.encode(c.render(_first_conversation(stage, rows[j]))):
            j += 1
        matched.append(j if j < len(rows) else None)
        j += 1
    return matched


def _first_conversation(stage: str, row: dict) -> list[dict]:
    return [*row["messages"], row["chosen"]] if stage == "dpo" else row["messages"]


def check_split(c: Checker, run: Run, split: str, entry: dict, export: Path, produced: list[dict]) -> Result:
    rows = [json.loads(line) for line in (export / entry["path"]).read_text(encoding="utf-8").splitlines()]
    result = Result(run.name, split, entry["examples"], len(rows), len(produced))
    same_rows = len(produced) == len(rows)
    for n, (ex, i) in enumerate(zip(produced, _match(c, run.export_stage, produced, rows))):
        if i is None:
            problems = ["matches no remaining exported row"]
        elif run.export_stage == "kto" and not same_rows:
            problems = ["rows were dropped, so the KL shift cannot be checked"]
        else:
            problems = CHECKS[run.export_stage](c, ex, rows[i], rows, i, bool(run.extra.get("mask_history")))
        result.checked += 1
        if problems:
            result.mismatches += 1
            result.problems += [f"{run.name} {split} example {n} (row {i}): {p}" for p in problems]
    return result


def lf_datasets(run: Run, export: Path, model: Path, work: Path, files: dict[str, str]) -> tuple[Checker, dict]:
    """A Checker on LLaMA-Factory's tokenizer, and {split: examples as dicts} as its workflow gets them."""
    args = {"stage": run.lf_stage, "model_name_or_path": str(model), "dataset_dir": str(export),
            "dataset": files["train"], "do_train": True, "finetuning_type": "lora", "cutoff_len": CUTOFF_LEN,
            "output_dir": str(work / run.name.replace(" ", "_")), "overwrite_cache": True, "report_to": "none",
            **({"eval_dataset": files["test"]} if "test" in files else {}), **run.extra}
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    with contextlib.redirect_stdout(sys.stderr):  # its "training example:" dump
        module = get_dataset(template, model_args, data_args, training_args, stage=run.data_stage,
                             **tokenizer_module)
    produced = {"train": module.get("train_dataset"), "test": module.get("eval_dataset")}
    checker = Checker(tokenizer_module["tokenizer"], data_args.preprocessing_batch_size)
    return checker, {s: list(d) for s, d in produced.items() if d is not None}


def run_stage(run: Run, export: Path, model: Path, work: Path, summary: dict) -> list[Result]:
    entries = {o["split"]: o for o in summary["outputs"] if o["stage"] == run.export_stage}
    files = {s: Path(o["path"]).stem for s, o in entries.items() if o["path"]}
    try:
        checker, produced = lf_datasets(run, export, model, work, files)
    except Exception as error:  # reported in the table, and the other stages still run
        message = f"{run.name}: LLaMA-Factory raised {type(error).__name__}: {str(error).splitlines()[0]}"
        return [Result(run.name, s, o["examples"], -1, 0, problems=[message]) for s, o in entries.items()]
    results = []
    for split, entry in entries.items():
        if entry["path"] is None:
            results.append(Result(run.name, split, entry["examples"], 0, len(produced.get(split, []))))
            continue
        results.append(check_split(checker, run, split, entry, export, produced.get(split, [])))
    return results


def table(results: list[Result]) -> str:
    head = ("stage", "split", "export.json", "jsonl rows", "LF rows", "checked", "mismatches", "")
    lines = [head] + [(r.run, r.split, str(r.exported), str(r.lines), str(r.produced), str(r.checked),
                       str(r.mismatches), "ok" if r.ok else "FAIL") for r in results]
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, required=True, help="an `uftdata export --to llamafactory` folder")
    parser.add_argument("--model", type=Path, required=True, help="a folder with the tiny model and tokenizer")
    parser.add_argument("--work", type=Path, required=True, help="a scratch folder (output_dir)")
    args = parser.parse_args(argv)
    for handler in logging.getLogger("llamafactory").handlers:  # its logs go to stdout; the table does
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    summary = json.loads((args.export / "export.json").read_text(encoding="utf-8"))
    results = [r for run in RUNS for r in run_stage(run, args.export, args.model, args.work, summary)]
    print(f"llamafactory {version('llamafactory')}, torch {version('torch')}, torchaudio {version('torchaudio')}, "
          f"transformers {version('transformers')}, datasets {version('datasets')}, trl {version('trl')}, "
          f"peft {version('peft')}; template parsed from the tokenizer's chat template; cutoff_len {CUTOFF_LEN}")
    print(table(results))
    for r in results:
        for problem in r.problems[:SHOW_PROBLEMS]:
            print(f"  {problem}")
        if len(r.problems) > SHOW_PROBLEMS:
            print(f"  ... and {len(r.problems) - SHOW_PROBLEMS} more in {r.run} {r.split}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # exit 1 means a mismatch; anything unexpected is 3
        traceback.print_exc()
        sys.exit(3)
