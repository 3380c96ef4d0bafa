"""`uft-train eval`'s options (the work is in uft_train/evaluate.py)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from uft_train.suites import SUITES

DESCRIPTION = """\
Evaluate a run or a model with lm-evaluation-harness and write eval.json, results.md (the table in the
UFT paper's layout), lm_eval.json and every sample to OUT (default RUN/eval/SUITE).

RUN_OR_MODEL: a run folder (its base model, its adapter unmerged, its tokenizer and chat template), a
model folder (`uft-train export` output or any transformers checkpoint; safetensors only) or a Hub id.

suites:
  leaderboard-v2  bbh, gpqa, mmlu-pro, musr, ifeval, math-hard at the Open LLM Leaderboard v2's n-shot,
                  with its normalised scores (the paper's Table 1); chat template applied
  leaderboard-v1  gsm8k, truthfulqa mc2, winogrande, arc, hellaswag, mmlu at the v1 leaderboard's n-shot
                  (the paper's Table 2); no chat template, as v1 ran
  local           the repository's two small tasks: offline, a check of the pipeline
  TASK,TASK,...   any lm-eval task names (with --include, your own task YAMLs)

Task datasets are downloaded by lm-eval where the Hub is reachable. Offline (or with HF_HUB_OFFLINE=1),
a suite whose datasets are not in the Hugging Face cache stops before loading the model and names
each missing dataset and package. MT-Bench and AlpacaEval need a judge model: see the README's
"Evaluate" section for running them on an export."""


def batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uft-train eval", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="RUN_OR_MODEL")
    p.add_argument("--suite", default="local", metavar="SUITE",
                   help=f"{' | '.join(SUITES)} | comma-separated lm-eval tasks (default: local)")
    p.add_argument("-o", "--out", type=Path, default=None, help="output folder (default RUN/eval/SUITE)")
    p.add_argument("--num-fewshot", type=int, default=None,
                   help="shots for a task list (default: each task's own); named suites fix their own")
    p.add_argument("--limit", type=float, default=None,
                   help="examples per task (a fraction if < 1): for trying the setup; not the suite's scores")
    p.add_argument("--batch-size", type=batch_size, default=8,
                   help="requests per forward pass, or auto (lm-eval finds the largest that fits; default 8)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="model folders and Hub ids (default: the checkpoint's); a run uses its recipe's")
    template = p.add_mutually_exclusive_group()
    template.add_argument("--chat-template", dest="chat_template", action="store_true", default=None,
                          help="apply the tokenizer's chat template (few-shot examples as turns)")
    template.add_argument("--no-chat-template", dest="chat_template", action="store_false",
                          help="plain text prompts (default for leaderboard-v1)")
    p.add_argument("--adapter", type=Path, default=None,
                   help="a LoRA adapter folder to apply, unmerged, over a model folder or Hub id (lm-eval's peft=)")
    p.add_argument("--include", type=Path, default=None, help="a folder of your own lm-eval task YAMLs")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="let transformers run a model repository's own code (off by default)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier uft-train eval")
    return p


def eval_command(argv: Sequence[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    from uft_train.evaluate import EvalOptions, evaluate, report

    if args.num_fewshot is not None and args.suite in SUITES:
        p.error(f"--num-fewshot applies to a task list; {args.suite} fixes its own")
    options = EvalOptions(suite=args.suite, out=args.out, shots=args.num_fewshot, limit=args.limit,
                          batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                          chat_template=args.chat_template, adapter=args.adapter, include=args.include,
                          trust_remote_code=args.trust_remote_code, overwrite=args.overwrite)
    out, summary = evaluate(args.target, options)
    print(report(out, summary))
    return 0


def table_command(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="uft-train eval-table",
        description="Finished `uft-train eval` results of several runs or models side by side, a row each, in "
                    "the UFT paper's layout (e.g. SFT, DPO, UFT on leaderboard-v2). Evaluates nothing.")
    p.add_argument("paths", type=Path, nargs="+", metavar="RUN_OR_EVAL",
                   help="a run folder (reads RUN/eval/SUITE/eval.json) or an evaluation folder (-o of uft-train eval)")
    p.add_argument("--suite", required=True, metavar="SUITE", help="the suite all of them were evaluated on")
    p.add_argument("-o", "--out", type=Path, default=None, help="also write the table to this markdown file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    args = p.parse_args(argv)
    from uft_train.evaltable import comparison
    from uftdata.atomic import atomic_path

    text = comparison(args.paths, args.suite)
    print(text, end="")
    if args.out is not None:
        with atomic_path(args.out, overwrite=args.overwrite, inputs=args.paths) as tmp:
            tmp.write_text(text, encoding="utf-8")
        print(f"uft-train eval-table: wrote {args.out}")
    return 0
