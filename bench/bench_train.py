"""Time `uft-train` against TRL's DPOTrainer and KTOTrainer: one tiny model, one mixture, one run.

    python bench/bench_train.py [--steps 20] [--warmup 2] [--json bench/out/train.json]

Model: a tiny Llama (hidden 256, 6 layers, 4 heads, MLP 736; 5.23M parameters) over the project's
512-token tokenizer, float32 on CPU, with a LoRA adapter (r 16, alpha 16, dropout 0, all seven
projections) for every method; every reference is that model with the adapter disabled.
Data: 8 x (warmup + steps + 1) synthetic pairs in the row schema, generated in-process from a
seeded word list (bench/generate.py's) so that every rendered prompt is 64 tokens and every
prompt + completion exactly 256 (no padding, no truncation, enough rows for one epoch). The same
rows go to every method: `sft.parquet` (the chosen rows as sft rows) for our SFT, `pairs.parquet`
(chosen and rejected rows, kind pairwise) for the rest; TRL DPO gets the pairs as
prompt/chosen/rejected, TRL KTO the rows as prompt/completion/label.

Methods, each a whole process run one at a time (fresh memory), batch 8 and AdamW for all:
  sft             uft-train, loss sft on the chosen rows             8 sequences: policy fwd+bwd
  una_online      uft-train, una_mse, reference online               8 rows: policy fwd+bwd, ref fwd
  una_precompute  uft-train, una_mse, loss.reference: precompute     8 rows: policy fwd+bwd (cache built first)
  uft_dpo         uft-train, dpo (no target; same work as trl_dpo)   8 pairs = 16 rows: fwd+bwd, ref fwd
  uft_kto         uft-train, kto (no target; same work as trl_kto)   8 rows: fwd+bwd, ref fwd; 8 KL rows: 2 fwd
  trl_dpo         trl.DPOTrainer, sigmoid loss                       8 pairs = 16 rows: fwd+bwd, ref fwd
  trl_kto         trl.KTOTrainer, kto loss                           8 rows: fwd+bwd, ref fwd; 8 KL rows: 2 fwd
Ours run `uft_train.train.train` on a recipe (max_steps = warmup + steps) and read each step's
time from metrics.jsonl (`tokens / tokens_per_s`: the time of `train_step`, collation included).
TRL's steps are timed by a TrainerCallback from one `on_step_end` to the next (data loading and
collation included, like ours); `on_step_begin` -> `on_step_end` is kept in the JSON too.

Tokens of a step = the sequence lengths of the rows whose policy forward takes gradients:
reference, cache and KTO KL forwards are not counted. Figures: tokens/s is the median over the
timed steps (after --warmup steps) of tokens / step seconds; peak RSS is ru_maxrss from os.wait4
on the method's process (Linux: KiB). This parent imports only the standard library so its own
memory does not leak into the children's ru_maxrss (see bench_data.py). Markdown to stdout,
progress to stderr, raw figures to --json; work files in bench/out/train/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench_data import run_process
from report import machine

BENCH = Path(__file__).resolve().parent
TINY = {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 736, "max_position_embeddings": 512}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SEQ_LEN, PROMPT_LEN, BATCH = 256, 64, 8
SEED, LR, BETA = 0, 1e-5, 0.1  # the same for every method; neither changes the work of a step
OURS = {  # method -> (recipe `loss:` section, data file)
    "sft": ({"name": "sft"}, "sft.parquet"),
    "una_online": ({"name": "una_mse", "reference": "online"}, "pairs.parquet"),
    "una_precompute": ({"name": "una_mse", "reference": "precompute"}, "pairs.parquet"),
    "uft_dpo": ({"name": "dpo"}, "pairs.parquet"),
    "uft_kto": ({"name": "kto"}, "pairs.parquet"),
}
TRL = ("trl_dpo", "trl_kto")
METHODS = (*OURS, *TRL)
LABELS = {
    "sft": ("uft-train `sft` (chosen rows)", "8 seqs: policy fwd+bwd"),
    "una_online": ("uft-train `una_mse`, online reference", "8 seqs: policy fwd+bwd, ref fwd"),
    "una_precompute": ("uft-train `una_mse`, precomputed reference", "8 seqs: policy fwd+bwd (ref from cache)"),
    "uft_dpo": ("uft-train `dpo` (no target)", "8 pairs = 16 seqs: policy fwd+bwd, ref fwd"),
    "uft_kto": ("uft-train `kto` (no target)", "8 seqs: policy fwd+bwd, ref fwd; 8 KL seqs: policy + ref fwd"),
    "trl_dpo": ("TRL `DPOTrainer`", "8 pairs = 16 seqs: policy fwd+bwd, ref fwd"),
    "trl_kto": ("TRL `KTOTrainer`", "8 seqs: policy fwd+bwd, ref fwd; 8 KL seqs: policy + ref fwd"),
}
# (label, numerator, denominator, target, met?) over tokens/s; the peak-RSS target is in `ratio_rows`.
SPEED_TARGETS = [
    ("UFT precomputed / our SFT (tokens/s)", "una_precompute", "sft", ">= 0.9", lambda r: r >= 0.9),
    ("UFT online / TRL KTO (tokens/s)", "una_online", "trl_kto", ">= 1.3", lambda r: r >= 1.3),
    ("UFT online / TRL DPO (tokens/s)", "una_online", "trl_dpo", ">= 1.3", lambda r: r >= 1.3),
    ("our dpo / TRL DPO (tokens/s, same loss)", "uft_dpo", "trl_dpo", "none", None),
    ("our kto / TRL KTO (tokens/s, same loss)", "uft_kto", "trl_kto", "none", None),
]


# --- the children: prepare, then one process per method (heavy imports stay inside) ----------------

def synthetic_rows(tokenizer, pairs: int) -> tuple:  # noqa: ANN001 - (pairwise rows, sft rows) as polars frames
    """`pairs` pairs (chosen then rejected, one prompt each) whose rendered prompt is PROMPT_LEN tokens and
    whole SEQ_LEN, and their chosen rows as sft rows: valid rows of the schema, ids included."""
    import random

    import polars as pl
    from generate import WORDS

    from uftdata import ids, schema

    # Each message sits between special tokens, which the tokenizer matches before BPE, and the
    # byte-level pre-tokenizer splits on spaces: " w1 w2 ..." has the summed token counts of its words.
    cost = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in WORDS}
    ones = sorted(w for w in WORDS if cost[w] == 1)
    rng = random.Random(SEED)

    def message(role: str, n_tokens: int) -> list[dict]:
        words = []
        while n_tokens > 0:
            word = rng.choice(WORDS)
            word = word if cost[word] <= n_tokens else rng.choice(ones)
            words.append(word)
            n_tokens -= cost[word]
        return [{"role": role, "content": "".join(" " + w for w in words)}]

    # Prompt: <|user|>...<|end|><|assistant|>; completion: ...<|end|>.
    prompts = [message("user", PROMPT_LEN - 3) for _ in range(pairs)]
    chosen, rejected = (ids.with_ids(pl.DataFrame({"prompt": prompts, "completion": [
        message("assistant", SEQ_LEN - PROMPT_LEN - 1) for _ in range(pairs)]})) for _ in range(2))
    common = {"pair_id": ids.pair_ids(chosen["id"], rejected["id"]), "position": pl.Series(range(pairs))}
    rows = pl.concat([chosen.with_columns(label=pl.lit(True), score=pl.lit(1.0, pl.Float32), **common),
                      rejected.with_columns(label=pl.lit(False), score=pl.lit(0.0, pl.Float32), **common)])
    rows = rows.sort("position", "label", descending=[False, True]).with_columns(  # pairs in order, chosen first
        kind=pl.lit("pairwise"), source=pl.lit("bench_train"), turn=pl.lit(0, pl.Int32),
        source_id=pl.format("{}:{}", "position", pl.when("label").then(pl.lit("chosen")).otherwise(pl.lit("rejected"))),
        attributes=pl.lit(None, schema.POLARS_SCHEMA["attributes"]))
    sft = rows.filter(pl.col("label")).with_columns(kind=pl.lit("sft"), label=pl.lit(None, pl.Boolean),
                                                    pair_id=pl.lit(None, pl.String))
    return rows, sft


def prepare(work: Path, pairs: int) -> None:
    """The tokenizer, the same rows as pairs.parquet and sft.parquet, and the model's parameter counts."""
    import pyarrow.parquet as pq

    from uft_train.config import recipe_from_mapping
    from uft_train.data import tokenize_split
    from uft_train.model import add_adapter
    from uft_train.tiny import build_tiny_model
    from uft_train.tokenizer import load_or_build_tokenizer
    from uftdata import schema

    tokenizer = load_or_build_tokenizer(work / "tokenizer")
    rows, sft = synthetic_rows(tokenizer, pairs)
    for name, frame in (("pairs", rows), ("sft", sft)):
        examples, dropped = tokenize_split(frame, tokenizer, template=None, max_length=SEQ_LEN,
                                           max_prompt_length=2 * PROMPT_LEN)
        lengths = {(len(e.input_ids), e.prompt_len) for e in examples}
        if dropped or lengths != {(SEQ_LEN, PROMPT_LEN)}:  # a template or tokenizer change broke the arithmetic
            raise RuntimeError(f"{name}: rows tokenize to (length, prompt) {sorted(lengths)}, dropped {dict(dropped)}; "
                               f"expected all ({SEQ_LEN}, {PROMPT_LEN})")
        pq.write_table(schema.to_arrow(frame), work / f"{name}.parquet")
    base = build_tiny_model(tokenizer, **TINY)
    n_base = sum(p.numel() for p in base.parameters())
    recipe = recipe_from_mapping(our_recipe("una_online", work, 1), "bench_train")
    n_lora = sum(p.numel() for p in add_adapter(base, recipe, implicit_reward=True).parameters() if p.requires_grad)
    write_json(work / "setup.json", {"base_parameters": n_base, "lora_parameters": n_lora, "pairs": pairs,
                                     "rows": rows.height, "seq_len": SEQ_LEN, "prompt_len": PROMPT_LEN})


def our_recipe(method: str, work: Path, steps: int) -> dict:
    loss, data_file = OURS[method]
    return {
        "model": {"name": "tiny", "dtype": "float32", "tiny": TINY},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "targets": list(TARGETS)},
        "data": {"path": str(work / data_file), "max_length": SEQ_LEN, "max_prompt_length": 2 * PROMPT_LEN},
        "loss": {"beta": BETA, **loss},
        "optim": {"lr": LR, "warmup_ratio": 0.0, "schedule": "constant"},
        "train": {"seed": SEED, "epochs": 1, "max_steps": steps, "batch_size": BATCH, "micro_batch_size": BATCH,
                  "device": "cpu", "autocast_bf16": False},
        "output": {"dir": str(work / "runs" / method), "overwrite": True},
    }


def run_ours(method: str, work: Path, steps: int) -> dict:
    import torch

    from uft_train.config import recipe_from_mapping
    from uft_train.train import train

    folder = work / "runs" / method
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(work / "tokenizer", folder / "tokenizer")  # the run would build the same one; copying is faster
    train(recipe_from_mapping(our_recipe(method, work, steps), "bench_train"))
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"tokens": [m["tokens"] for m in metrics], "step_s": [m["tokens"] / m["tokens_per_s"] for m in metrics],
            "threads": torch.get_num_threads()}


def trl_setup(method: str, work: Path, steps: int) -> tuple:
    """(trainer class, its config, the rows in its layout) for trl_dpo or trl_kto."""
    import dataclasses

    import pyarrow.parquet as pq
    import trl

    rows = pq.read_table(work / "pairs.parquet").to_pylist()
    if method == "trl_dpo":
        trainer_cls, config_cls = trl.DPOTrainer, trl.DPOConfig
        rejected = {r["pair_id"]: r for r in rows if not r["label"]}
        data = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": rejected[r["pair_id"]]["completion"]}
                for r in rows if r["label"]]
    else:
        trainer_cls, config_cls = trl.KTOTrainer, trl.KTOConfig
        data = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in rows]
    # TRL's configs default to bf16=True (CPU autocast too) and gradient checkpointing on: both off, as ours.
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    names = {f.name for f in dataclasses.fields(config_cls)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    config = config_cls(
        output_dir=str(work / "runs" / method), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=steps, max_length=SEQ_LEN, bf16=False, fp16=False, use_cpu=True, **{checkpointing: False},
        learning_rate=LR, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        beta=BETA, seed=SEED, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    return trainer_cls, config, data


def run_trl(method: str, work: Path, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from uft_train.model import TINY_BASE_SEED
    from uft_train.tiny import build_tiny_model
    from uft_train.tokenizer import load_or_build_tokenizer

    trainer_cls, config, data = trl_setup(method, work, steps)
    tokenizer = load_or_build_tokenizer(work / "tokenizer")
    model = build_tiny_model(tokenizer, **TINY, seed=TINY_BASE_SEED)  # the weights uft-train builds
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=list(TARGETS), bias="none",
                      task_type="CAUSAL_LM")
    begins: list[float] = []
    ends: list[float] = []
    tokens: list[int] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *args: object, **kwargs: object) -> None:
            begins.append(time.perf_counter())

        def on_step_end(self, *args: object, **kwargs: object) -> None:
            ends.append(time.perf_counter())

    class CountingTrainer(trainer_cls):  # the policy forward's tokens; KTO's KL rows are under KL_* keys
        def training_step(self, model, inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            tokens.append(int(inputs["attention_mask"].sum()))
            return super().training_step(model, inputs, *args, **kwargs)

    trainer = CountingTrainer(model=model, args=config, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
                              peft_config=lora, callbacks=[StepClock()])
    trainer.train()
    # A step runs from the end of the one before, so the first has no whole-step time (it is a warm-up step).
    return {"tokens": tokens, "step_s": [None] + [b - a for a, b in zip(ends, ends[1:])],
            "step_s_begin_to_end": [b - a for a, b in zip(begins, ends)], "threads": torch.get_num_threads()}


def worker(method: str, work: Path, steps: int, threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    result = run_ours(method, work, steps) if method in OURS else run_trl(method, work, steps)
    write_json(work / f"{method}.json", result)


# --- the parent (standard library only) ------------------------------------------------------------

def summarize(result: dict, warmup: int) -> dict:
    timed = list(zip(result["tokens"], result["step_s"]))[warmup:]
    return {"tokens_per_step": statistics.median(t for t, _ in timed),
            "step_s": statistics.median(s for _, s in timed),
            "tokens_per_s": statistics.median(t / s for t, s in timed)}


def ratio_rows(figures: dict[str, dict]) -> list[tuple[str, float | None, str, str]]:
    """(label, value or None if a method did not run, target, met) for every ratio of the report."""
    rows = []
    for label, num, den, target, met in SPEED_TARGETS:
        value = (figures[num]["tokens_per_s"] / figures[den]["tokens_per_s"]) if num in figures and den in figures else None
        rows.append((label, value, target, "-" if met is None or value is None else ("yes" if met(value) else "NO")))
    ours = [figures[m]["peak_rss_mib"] for m in ("una_online", "una_precompute") if m in figures]
    theirs = [figures[m]["peak_rss_mib"] for m in TRL if m in figures]
    value = max(ours) / min(theirs) if ours and theirs else None
    rows.append(("peak RSS: max(UFT online, precomputed) / min(TRL DPO, KTO)", value, "<= 1.0",
                 "-" if value is None else ("yes" if value <= 1.0 else "NO")))
    return rows


def markdown(figures: dict[str, dict], setup: dict, info: dict, command: list[str], args: argparse.Namespace) -> str:
    lines = [
        "## Trainer benchmark",
        "",
        f"`{' '.join(command)}`: {args.steps} timed steps after {args.warmup} warm-up; "
        f"{info['nproc']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, load average "
        f"{info['load_avg_1m_at_start']:.2f} at start; torch {info['torch']} ({figures[next(iter(figures))]['threads']} "
        f"threads), transformers {info['transformers']}, peft {info['peft']}, trl {info['trl']}.",
        "",
        f"Tiny Llama of {setup['base_parameters']:,} parameters + {setup['lora_parameters']:,} LoRA (r 16, all "
        f"projections), float32 on CPU; {setup['pairs']:,} synthetic pairs, every sequence {SEQ_LEN} tokens "
        f"(prompt {PROMPT_LEN}); batch {BATCH}. Tokens = the policy forward's sequences (no reference or KL forwards).",
        "",
        "| method | a step | tokens/step | step s | tokens/s | vs our SFT | peak RSS MiB | process s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    sft = figures.get("sft", {}).get("tokens_per_s")
    for method, f in figures.items():
        name, work = LABELS[method]
        versus = f"{f['tokens_per_s'] / sft:.2f}" if sft else "-"
        lines.append(f"| {name} | {work} | {f['tokens_per_step']:,.0f} | {f['step_s']:.3f} | {f['tokens_per_s']:,.0f} "
                     f"| {versus} | {f['peak_rss_mib']:,.0f} | {f['process_s']:.1f} |")
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for label, value, target, met in ratio_rows(figures):
        lines.append(f"| {label} | {'-' if value is None else f'{value:.2f}'} | {target} | {met} |")
    return "\n".join(lines)


def versions(info: dict) -> dict:
    for package in ("torch", "transformers", "peft", "accelerate", "trl"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown or text!r}; expected some of {', '.join(METHODS)}")
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="Timed optimizer steps per method (default 20).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before them, at least 1 (default 2).")
    parser.add_argument("--methods", type=parse_methods, default=list(METHODS),
                        help=f"Comma-separated subset of {','.join(METHODS)} (default all).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every method (default torch's).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw figures to this JSON file.")
    parser.add_argument("--work", type=Path, default=BENCH / "out" / "train", help="Work folder (default bench/out/train/).")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: prepare, or one method
    args = parser.parse_args()
    if args.worker == "prepare":
        return prepare(args.work, BATCH * (args.warmup + args.steps + 1))
    if args.worker is not None:
        return worker(args.worker, args.work, args.warmup + args.steps, args.threads)
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be at least 1 (got {args.steps} and {args.warmup})")
    info = versions(machine())
    if info["trl"] is None and any(m in TRL for m in args.methods):
        sys.exit("bench: trl is not installed; install the benchmark extra: pip install -e '.[bench]'")
    if info["load_avg_1m_at_start"] > 0.25 * info["nproc"]:
        print(f"bench: warning: load average {info['load_avg_1m_at_start']:.1f} on {info['nproc']} CPUs; "
              "other work on this machine will skew the figures", file=sys.stderr)

    args.work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.work / "cache", ignore_errors=True)  # the precompute run always builds its cache
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "UFT_CACHE": str(args.work / "cache"), "TQDM_DISABLE": "1"}
    child = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--steps", str(args.steps),
             "--warmup", str(args.warmup), *(["--threads", str(args.threads)] if args.threads else [])]
    run_process([*child, "--worker", "prepare"], args.work / "prepare.log", env)
    setup = json.loads((args.work / "setup.json").read_text())
    figures, raw = {}, {}
    for method in args.methods:
        process_s, peak = run_process([*child, "--worker", method], args.work / f"{method}.log", env)
        raw[method] = json.loads((args.work / f"{method}.json").read_text())
        figures[method] = {**summarize(raw[method], args.warmup), "peak_rss_mib": peak, "process_s": process_s,
                           "threads": raw[method]["threads"]}
        print(f"  {method}: {figures[method]['tokens_per_s']:,.0f} tokens/s, {peak:,.0f} MiB, {process_s:.1f} s",
              file=sys.stderr)
    command = ["python", "bench/bench_train.py", *sys.argv[1:]]
    print(markdown(figures, setup, info, command, args))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        ratios = {label: value for label, value, _, _ in ratio_rows(figures)}
        write_json(args.json, {"command": command, "machine": info, "setup": setup, "steps": args.steps,
                               "warmup": args.warmup, "figures": figures, "ratios": ratios, "raw": raw})


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
