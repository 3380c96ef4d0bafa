"""Time `uft-train` against TRL's DPOTrainer and KTOTrainer: one tiny model, two shapes of data.

    python bench/bench_train.py [--steps 20] [--warmup 2] [--repeat 3] [--shape both] [--json FILE]

Model: a tiny Llama (hidden 256, 6 layers, 4 heads, MLP 736) over the shape's tokenizer, float32 on
CPU, with a LoRA adapter (r 16, alpha 16, dropout 0, all seven projections) for every method; every
reference is that model with the adapter disabled. Shapes (bench/train_rows.py):
  uniform  synthetic pairs, the project's 512-token tokenizer, every prompt 64 tokens and every
           sequence 256 (no padding, no truncation): per-step overhead.
  real     the real hh-rlhf pairs of ../shared/samples, rendered with recipes/mix_20k_20k.yaml's
           template and Mistral-7B-v0.1's tokenizer (32,000 tokens; uft-train's
           `model.tiny.tokenizer: mistral`, TRL the same tokenizer object): variable lengths.
The same rows go to every method: `sft.parquet` (the chosen rows as sft rows) for our SFT,
`pairs.parquet` (chosen and rejected rows, kind pairwise) for the rest; TRL DPO gets the pairs as
prompt/chosen/rejected, TRL KTO the rows as prompt/completion/label.

Methods, each a whole process (fresh memory), run one after the other and --repeat times over
(interleaved: every method once, then again), batch 8 and AdamW for all:
  sft             uft-train, loss sft on the chosen rows             8 sequences: policy fwd+bwd
  una_online      uft-train, una_mse, reference online               8 pairs = 16 rows: fwd+bwd, ref fwd
  una_precompute  uft-train, una_mse, loss.reference: precompute     8 pairs = 16 rows: fwd+bwd (cache first)
  uft_dpo         uft-train, dpo (no target; same work as trl_dpo)   8 pairs = 16 rows: fwd+bwd, ref fwd
  uft_kto         uft-train, kto (no target; same work as trl_kto)   8 rows: fwd+bwd, ref fwd; 8 KL rows: 2 fwd
  trl_dpo         trl.DPOTrainer, sigmoid loss                       8 pairs = 16 rows: fwd+bwd, ref fwd
  trl_kto         trl.KTOTrainer, kto loss                           8 rows: fwd+bwd, ref fwd; 8 KL rows: 2 fwd
Ours run `uft_train.train.train` on a recipe (max_steps = warmup + steps) and read each step's
time from metrics.jsonl (`tokens / tokens_per_s`: the time of `train_step`, collation included).
TRL's steps are timed by a TrainerCallback from one `on_step_end` to the next (data loading and
collation included, like ours); `on_step_begin` -> `on_step_end` is kept in the JSON too.

Tokens of a step = the sequence lengths of the rows whose policy forward takes gradients:
reference, cache and KTO KL forwards are not counted. A run's tokens/s is the median over its
timed steps (after --warmup) of tokens / step seconds; a method's figure is the median over its
runs, its peak RSS the median of the runs' ru_maxrss (os.wait4; Linux: KiB). This parent imports
only the standard library so its own memory does not leak into the children's ru_maxrss (see
bench_data.py). Markdown to stdout, progress to stderr, every run to --json; work files in
bench/out/train/<shape>/ (git-ignored).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bench_data import run_process
from report import machine
from train_report import markdown, method_figures, ratio_rows, run_figures
from train_rows import SHAPES, shape_settings

BENCH = Path(__file__).resolve().parent
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
BATCH = 8
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


# --- the children: prepare, then one process per method (heavy imports stay inside) ----------------

def prepare(work: Path, shape: str, pairs: int) -> None:
    """The shape's rows (pairs.parquet, sft.parquet) and what the report says of them and of the model."""
    from train_rows import write_rows

    from uft_train.config import recipe_from_mapping
    from uft_train.model import add_adapter, load_tokenizer_and_model

    rows = write_rows(work, shape, pairs)
    recipe = recipe_from_mapping(our_recipe("una_online", work, shape, 1), "bench_train")
    _, base = load_tokenizer_and_model(recipe, None)
    n_base = sum(p.numel() for p in base.parameters())
    n_lora = sum(p.numel() for p in add_adapter(base, recipe, implicit_reward=True).parameters() if p.requires_grad)
    write_json(work / "setup.json", {"base_parameters": n_base, "lora_parameters": n_lora, **rows})


def our_recipe(method: str, work: Path, shape: str, steps: int) -> dict:
    loss, data_file = OURS[method]
    settings = shape_settings(shape)
    return {
        "model": {"name": "tiny", "dtype": "float32", "tiny": settings["tiny"],
                  **({"template": settings["template"]} if settings["template"] else {})},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "targets": list(TARGETS)},
        "data": {"path": str(work / data_file), "max_length": settings["max_length"],
                 "max_prompt_length": settings["max_prompt_length"]},
        "loss": {"beta": BETA, **loss},
        "optim": {"lr": LR, "warmup_ratio": 0.0, "schedule": "constant"},
        # max_steps ends the run; the uniform shape has rows for one epoch, the real one may start more.
        "train": {"seed": SEED, "epochs": 100, "max_steps": steps, "batch_size": BATCH, "micro_batch_size": BATCH,
                  "device": "cpu", "autocast_bf16": False},
        "output": {"dir": str(work / "runs" / method), "overwrite": True},
    }


def run_ours(method: str, work: Path, shape: str, steps: int) -> dict:
    import torch

    from uft_train.config import TinyModelConfig, recipe_from_mapping
    from uft_train.train import train

    folder = work / "runs" / method
    shutil.rmtree(folder, ignore_errors=True)  # a fresh run folder: the run builds and saves its tokenizer
    mapping = our_recipe(method, work, shape, steps)
    if shape == "real" and "tokenizer" not in {f.name for f in dataclasses.fields(TinyModelConfig)}:
        older_checkout(mapping, work)
    train(recipe_from_mapping(mapping, "bench_train"))
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"tokens": [m["tokens"] for m in metrics], "step_s": [m["tokens"] / m["tokens_per_s"] for m in metrics],
            "threads": torch.get_num_threads()}


def older_checkout(mapping: dict, work: Path) -> None:
    """An older uft_train (`--ours-path`, before `model.tiny.tokenizer` existed) measured on the real
    shape: its loader is replaced by one that builds the same tiny model over the same tokenizer
    folder that TRL reads (written by `prepare` with this checkout), as bench_memory.py does."""
    from transformers import AutoTokenizer

    import uft_train.train as train_module
    from uft_train.tiny import build_tiny_model

    dims = {k: v for k, v in mapping["model"]["tiny"].items() if k != "tokenizer"}
    mapping["model"]["tiny"] = dims

    def load(_recipe: object, tokenizer_dir: Path | None) -> tuple:
        tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
        if tokenizer_dir is not None and not (tokenizer_dir / "tokenizer.json").is_file():
            tokenizer.save_pretrained(tokenizer_dir)  # the reference-cache key hashes the run's tokenizer folder
        return tokenizer, build_tiny_model(tokenizer, **dims)

    train_module.load_tokenizer_and_model = load  # type: ignore[attr-defined]


def trl_setup(method: str, work: Path, shape: str, steps: int) -> tuple:
    """(trainer class, its config, the rows in its layout) for trl_dpo or trl_kto."""

    import pyarrow.parquet as pq
    from train_rows import trl_layout

    rows = pq.read_table(work / "pairs.parquet").to_pylist()
    # TRL's configs default to bf16=True (CPU autocast too) and gradient checkpointing on: both off, as ours.
    trainer_cls, config_cls, data, checkpointing = trl_layout(method, rows)
    config = config_cls(
        output_dir=str(work / "runs" / method), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=steps, max_length=shape_settings(shape)["max_length"], bf16=False, fp16=False, use_cpu=True, **{checkpointing: False},
        learning_rate=LR, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        beta=BETA, seed=SEED, save_strategy="no", eval_strategy="no", logging_strategy="no", report_to="none",
        dataloader_num_workers=0, disable_tqdm=True,
    )
    return trainer_cls, config, data


def run_trl(method: str, work: Path, shape: str, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from train_rows import tokenizer_for
    from transformers import TrainerCallback

    from uft_train.config import recipe_from_mapping
    from uft_train.model import load_tokenizer_and_model

    trainer_cls, config, data = trl_setup(method, work, shape, steps)
    tokenizer = tokenizer_for(shape, work / "tokenizer")  # the same tokenizer and template as ours
    recipe = recipe_from_mapping(our_recipe("uft_dpo", work, shape, steps), "bench_train")
    _, model = load_tokenizer_and_model(recipe, None)  # the weights uft-train builds
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


def worker(method: str, work: Path, shape: str, steps: int, threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    result = run_ours(method, work, shape, steps) if method in OURS else run_trl(method, work, shape, steps)
    write_json(work / f"{method}.json", result)


# --- the parent (standard library only) ------------------------------------------------------------

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


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="Timed optimizer steps per method (default 20).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps before them, at least 1 (default 2).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of every method, each a fresh process (default 1).")
    parser.add_argument("--shape", choices=(*SHAPES, "both"), default="both", help="Data shape (default both).")
    parser.add_argument("--methods", type=parse_methods, default=list(METHODS),
                        help=f"Comma-separated subset of {','.join(METHODS)} (default all).")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every method (default torch's).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw figures to this JSON file.")
    parser.add_argument("--work", type=Path, default=BENCH / "out" / "train", help="Work folder (default bench/out/train/).")
    parser.add_argument("--ours-path", type=Path, default=None,
                        help="Run uft-train's methods from the uft_train package in this folder (e.g. a git worktree "
                             "of an older commit, for before/after figures); data and TRL use this checkout.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: prepare, or one method
    args = parser.parse_args()
    if args.worker is None and (args.steps < 1 or args.warmup < 1 or args.repeat < 1):
        parser.error(f"--steps, --warmup and --repeat must be at least 1 (got {args.steps}, {args.warmup}, {args.repeat})")
    return args


def run_shape(args: argparse.Namespace, shape: str, env: dict[str, str]) -> tuple[dict, dict, dict]:
    """(figures by method, the shape's setup, every run by method) of one shape."""
    work = args.work / shape
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "cache", ignore_errors=True)  # the precompute run always builds its cache
    env = {**env, "UFT_CACHE": str(work / "cache")}
    child = [sys.executable, str(Path(__file__).resolve()), "--work", str(work), "--shape", shape,
             "--steps", str(args.steps), "--warmup", str(args.warmup),
             *(["--threads", str(args.threads)] if args.threads else [])]
    run_process([*child, "--worker", "prepare"], work / "prepare.log", env)
    ours_env = env if args.ours_path is None else {**env, "PYTHONPATH": str(args.ours_path.resolve())}
    setup = json.loads((work / "setup.json").read_text())
    runs: dict[str, list[dict]] = {m: [] for m in args.methods}
    for k in range(args.repeat):
        for method in args.methods:
            load = os.getloadavg()[0]
            process_s, peak = run_process([*child, "--worker", method], work / f"{method}.log",
                                          env if method in TRL else ours_env)
            raw = json.loads((work / f"{method}.json").read_text())
            shutil.rmtree(work / "cache", ignore_errors=True)  # every precompute run builds its cache
            run = {**raw, **run_figures(raw, args.warmup), "peak_rss_mib": peak, "process_s": process_s, "load_1m": load}
            runs[method].append(run)
            print(f"  {shape} {method} run {k + 1}: {run['tokens_per_s']:,.0f} tokens/s, {peak:,.0f} MiB, "
                  f"{process_s:.1f} s, load {load:.2f}", file=sys.stderr)
    return {m: method_figures(r) for m, r in runs.items()}, setup, runs


def main() -> None:
    args = arguments()
    if args.worker == "prepare":
        return prepare(args.work, args.shape, BATCH * (args.warmup + args.steps + 1))
    if args.worker is not None:
        return worker(args.worker, args.work, args.shape, args.warmup + args.steps, args.threads)
    info = versions(machine())
    if info["trl"] is None and any(m in TRL for m in args.methods):
        sys.exit("bench: trl is not installed; install the benchmark extra: pip install -e '.[bench]'")
    if info["load_avg_1m_at_start"] > 0.25 * info["nproc"]:
        print(f"bench: warning: load average {info['load_avg_1m_at_start']:.1f} on {info['nproc']} CPUs; "
              "other work on this machine will skew the figures", file=sys.stderr)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"}
    by_shape, setups, raw = {}, {}, {}
    for shape in SHAPES if args.shape == "both" else (args.shape,):
        by_shape[shape], setups[shape], raw[shape] = run_shape(args, shape, env)
    command = ["python", "bench/bench_train.py", *sys.argv[1:]]
    print(markdown(by_shape, setups, info, command, args.steps, args.warmup, args.repeat))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        ratios = {shape: {label: value for label, value, _, _ in ratio_rows(f)} for shape, f in by_shape.items()}
        write_json(args.json, {"command": command, "machine": info, "setup": setups, "steps": args.steps,
                               "warmup": args.warmup, "repeat": args.repeat, "figures": by_shape, "ratios": ratios,
                               "runs": raw})


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
