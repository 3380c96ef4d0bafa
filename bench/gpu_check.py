"""The prepared GPU check (issue 13): uft-train's losses and TRL's DPO and KTO on a Mistral-7B-shaped
model, one GPU, one command, nothing downloaded.

    python bench/gpu_check.py [--out bench/out/gpu] [--peak-flops 989e12] [--budget-s 560]
    python bench/gpu_check.py --tiny      # the same code on CPU, a tiny model (tests/test_gpu_check.py)

Model: uft-train's `model.name: tiny` with Mistral-7B-v0.1's shape (hidden 4096, 32 layers, 32 heads,
8 key-value heads, MLP 14336, Mistral's 32,000-token tokenizer from mistral-common, max positions
4096 = its sliding window), random weights drawn on the GPU in bfloat16, gradient checkpointing on,
LoRA r 16 / alpha 16 on all seven projections, AdamW, bf16 autocast. TRL gets the same model from
the same builder. Rows (bench/gpu_rows.py): synthetic text, every sequence exactly 2048 tokens
(prompt 512), batch 8 in one micro-batch; `sft` reads sft rows, `dpo` and `una_mse` pairs, `kto`
binary rows. Each method runs in a fresh process, one after the other (--tiny: all in one process,
the imports paid once); one that outlasts the budget is stopped and reported as such, so the
command ends in time.

Figures per method: tokens/s = median over the timed steps (after --warmup) of trained tokens /
step seconds (as bench/bench_train.py: ours from metrics.jsonl, TRL's between `on_step_end`s);
peak memory = torch.cuda.max_memory_allocated (--tiny: none; it runs every method in one CPU process);
MFU = `flops_per_trained_token` x tokens/s / --peak-flops (989e12: H200 SXM bf16 dense), where N
= non-embedding parameters including the LM head, a trained token costs 4N (LoRA: forward 2N,
activation gradients 2N, no base-weight gradients) + 12*L*T*d of attention, a reference-forward
token 2N + 4*L*T*d, a KTO KL-row token two forwards (policy and reference, no gradient) 4N +
8*L*T*d; recomputation by gradient checkpointing is not counted. The parent imports the standard
library only (its memory would count in a child's peak RSS, see bench_data.py). Writes
results.json and results.md to --out; work files in --out/work.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(BENCH), str(ROOT)]  # this checkout's uft_train, installed or not

from train_report import run_figures  # noqa: E402  (standard library only)

from uftdata.atomic import atomic_path  # noqa: E402  (standard library only)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BATCH, SEED, LR, BETA = 8, 0, 1e-5, 0.1


class Shape(NamedTuple):
    tiny: dict  # model.tiny
    dtype: str
    device: str
    seq_len: int
    prompt_len: int
    warmup: int
    steps: int
    isolated: bool  # each method in a fresh process (its own peak memory); else all in one (imports paid once)


SHAPES = {
    "gpu": Shape({"architecture": "mistral", "hidden_size": 4096, "num_layers": 32, "num_heads": 32, "num_kv_heads": 8,
                  "intermediate_size": 14336, "max_position_embeddings": 4096, "tokenizer": "mistral"},
                 "bfloat16", "cuda", seq_len=2048, prompt_len=512, warmup=2, steps=4, isolated=True),
    "tiny": Shape({"architecture": "mistral", "hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
                   "intermediate_size": 128, "max_position_embeddings": 256, "tokenizer": "mistral"},
                  "float32", "cpu", seq_len=64, prompt_len=16, warmup=1, steps=1, isolated=False),
}


class Method(NamedTuple):
    label: str
    loss: dict | None  # uft-train's loss section; None: TRL
    rows: str  # the data file
    reference: int  # reference-forward tokens per trained token
    kl: int  # KTO KL-row tokens per trained token


METHODS = {
    "sft": Method("uft-train `sft`", {"name": "sft"}, "sft", 0, 0),
    "una_online": Method("uft-train `una_mse`, online reference", {"name": "una_mse", "reference": "online"}, "pairs", 1, 0),
    "una_precompute": Method("uft-train `una_mse`, precomputed reference",
                             {"name": "una_mse", "reference": "precompute"}, "pairs", 0, 0),
    "uft_dpo": Method("uft-train `dpo`", {"name": "dpo"}, "pairs", 1, 0),
    "uft_kto": Method("uft-train `kto`", {"name": "kto"}, "binary", 1, 1),
    "trl_dpo": Method("TRL `DPOTrainer`", None, "pairs", 1, 0),
    "trl_kto": Method("TRL `KTOTrainer`", None, "binary", 1, 1),
}


# --- the arithmetic (pure) ----------------------------------------------------------------------------

def non_embedding_parameters(*, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int,
                             intermediate: int) -> int:
    """N of a Llama/Mistral decoder with an untied LM head: per layer q, o (d x d), k, v (d x kv_heads
    x head_dim), the MLP's three d x intermediate matrices and two norms; the final norm; the LM head."""
    head_dim = hidden // heads
    per_layer = 2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate + 2 * hidden
    return layers * per_layer + hidden + vocab * hidden


def flops_per_trained_token(n: int, *, layers: int, hidden: int, seq_len: int, reference: float, kl: float) -> float:
    """Model FLOPs of a step per trained token: 4N + 12LTd for the token itself, `reference` reference-
    forward tokens of 2N + 4LTd each and `kl` KTO KL-row tokens of 4N + 8LTd each (two forwards)."""
    attention = layers * seq_len * hidden
    return (4 * n + 12 * attention) + reference * (2 * n + 4 * attention) + kl * (4 * n + 8 * attention)


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    return tokens_per_s * flops_per_token / peak_flops


# --- the children ---------------------------------------------------------------------------------------

def recipe(shape: Shape, method: str, work: Path) -> dict:
    return {
        "model": {"name": "tiny", "dtype": shape.dtype, "tiny": shape.tiny, "gradient_checkpointing": True},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "targets": TARGETS},
        "data": {"path": str(work / f"{METHODS[method].rows}.parquet"), "max_length": shape.seq_len,
                 "max_prompt_length": 2 * shape.prompt_len},
        "loss": {"beta": BETA, **(METHODS[method].loss or {"name": "dpo"})},
        "optim": {"lr": LR, "warmup_ratio": 0.0, "schedule": "constant"},
        "train": {"seed": SEED, "epochs": 100, "max_steps": shape.warmup + shape.steps, "batch_size": BATCH,
                  "micro_batch_size": BATCH, "device": shape.device},
        "output": {"dir": str(work / "runs" / method), "overwrite": True},
    }


def load(shape: Shape, method: str, work: Path) -> tuple:
    """The recipe, tokenizer and base model uft-train builds, on the shape's device."""
    import torch

    from uft_train.config import recipe_from_mapping
    from uft_train.model import load_tokenizer_and_model

    parsed = recipe_from_mapping(recipe(shape, method, work), "gpu_check")
    return (parsed, *load_tokenizer_and_model(parsed, None, device=torch.device(shape.device)))


def prepare(shape: Shape, work: Path) -> None:
    from gpu_rows import write_rows

    from uft_train.tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer(shape.tiny["tokenizer"])
    tokenizer.pad_token = tokenizer.eos_token  # as uft_train.model does
    lengths = {"max_length": shape.seq_len, "max_prompt_length": 2 * shape.prompt_len}
    rows = write_rows(work, tokenizer, rows=BATCH * (shape.warmup + shape.steps), seq_len=shape.seq_len,
                      prompt_len=shape.prompt_len, lengths=lengths)
    write_json(work / "setup.json", rows)


def run_ours(shape: Shape, method: str, work: Path) -> dict:
    from uft_train.config import recipe_from_mapping
    from uft_train.train import train

    folder = train(recipe_from_mapping(recipe(shape, method, work), "gpu_check"))
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"tokens": [m["tokens"] for m in metrics], "step_s": [m["tokens"] / m["tokens_per_s"] for m in metrics]}


def trl_trainer(shape: Shape, method: str, work: Path, callbacks: list, tokens: list[int]) -> object:
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from train_rows import trl_layout

    rows = pq.read_table(work / f"{METHODS[method].rows}.parquet").to_pylist()
    trainer_cls, config_cls, data, checkpointing = trl_layout(method, rows)
    on_gpu = shape.device != "cpu"
    config = config_cls(
        output_dir=str(work / "runs" / method), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        max_steps=shape.warmup + shape.steps, max_length=shape.seq_len + 16, bf16=on_gpu, fp16=False,
        use_cpu=not on_gpu, **{checkpointing: True}, learning_rate=LR, lr_scheduler_type="constant",
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0, beta=BETA, seed=SEED, save_strategy="no",
        eval_strategy="no", logging_strategy="no", report_to="none", dataloader_num_workers=0, disable_tqdm=True)
    _, tokenizer, model = load(shape, "uft_dpo", work)  # the weights uft-train builds, on the device
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none", task_type="CAUSAL_LM")

    class CountingTrainer(trainer_cls):  # the policy forward's tokens; KTO's KL rows are under KL_* keys
        def training_step(self, model, inputs, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            tokens.append(int(torch.as_tensor(inputs["attention_mask"]).sum()))
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingTrainer(model=model, args=config, train_dataset=Dataset.from_list(data), processing_class=tokenizer,
                           peft_config=lora, callbacks=callbacks)


def run_trl(shape: Shape, method: str, work: Path) -> dict:
    from transformers import TrainerCallback

    ends: list[float] = []
    tokens: list[int] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *args: object, **kwargs: object) -> None:
            ends.append(time.perf_counter())

    trl_trainer(shape, method, work, [StepClock()], tokens).train()  # type: ignore[attr-defined]
    # A step runs from the end of the one before, so the first has no whole-step time (a warm-up step).
    return {"tokens": tokens, "step_s": [None] + [b - a for a, b in zip(ends, ends[1:])]}


def worker(shape: Shape, methods: str, work: Path) -> None:
    """`prepare`, or each of the comma-separated methods in turn, in this process."""
    for method in methods.split(","):
        if method == "prepare":
            prepare(shape, work)
        else:
            run_one(shape, method, work)


def run_one(shape: Shape, method: str, work: Path) -> None:
    import torch

    result = run_trl(shape, method, work) if METHODS[method].loss is None else run_ours(shape, method, work)
    on_gpu = torch.cuda.is_available() and shape.device != "cpu"
    result.update(peak_gpu_bytes=torch.cuda.max_memory_allocated() if on_gpu else None,
                  device=torch.cuda.get_device_name() if on_gpu else "cpu", torch=torch.__version__)
    write_json(work / f"{method}.json", result)


# --- the parent (standard library only) --------------------------------------------------------------

def run_child(argv: list[str], log: Path, env: dict[str, str], timeout_s: float) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS MiB) of argv, killed after `timeout_s` (status -9)."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(max(1.0, timeout_s), process.kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    return process.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def method_flops(method: str, shape: Shape, setup: dict) -> tuple[int, float]:
    """(N, model FLOPs per trained token) of a method on the shape."""
    tiny = shape.tiny
    n = non_embedding_parameters(vocab=setup["vocab"], hidden=tiny["hidden_size"], layers=tiny["num_layers"],
                                 heads=tiny["num_heads"], kv_heads=tiny["num_kv_heads"],
                                 intermediate=tiny["intermediate_size"])
    spec = METHODS[method]
    return n, flops_per_trained_token(n, layers=tiny["num_layers"], hidden=tiny["hidden_size"], seq_len=shape.seq_len,
                                      reference=spec.reference, kl=spec.kl)


def figures(method: str, raw: dict, shape: Shape, setup: dict, peak_flops: float) -> dict:
    """A finished method's figures: tokens/s (median over timed steps), peak memory and MFU."""
    n, per_token = method_flops(method, shape, setup)
    step = run_figures(raw, shape.warmup)
    peak = raw["peak_gpu_bytes"]
    return {**step, "mfu": mfu(step["tokens_per_s"], per_token, peak_flops), "flops_per_trained_token": per_token,
            "peak_gpu_gib": None if peak is None else peak / 2**30, "n_non_embedding": n}


def run_methods(methods: list[str], child: list[str], work: Path, env: dict, deadline: float, shape: Shape,
                setup: dict | None, peak_flops: float) -> dict[str, dict]:
    """Run `methods` in one child process (a fresh process per method when the shape isolates them);
    their figures by method. The peak RSS is the process's: one method's only when isolated."""
    left = deadline - time.monotonic()
    if left < 5:
        return {m: {"status": "not run: the --budget-s was spent"} for m in methods}
    for method in methods:
        (work / f"{method}.json").unlink(missing_ok=True)
    name = methods[0] if len(methods) == 1 else "methods"
    status, wall, rss = run_child([*child, "--worker", ",".join(["prepare"] * (setup is None) + methods)],
                                  work / f"{name}.log", env, left)
    shutil.rmtree(work / "cache", ignore_errors=True)  # the precompute run builds its cache each time
    if setup is None and (work / "setup.json").is_file():
        setup = json.loads((work / "setup.json").read_text())
    results = {}
    for method in methods:
        if not (work / f"{method}.json").is_file() or setup is None:
            why = "stopped at the --budget-s" if status == -9 else f"failed (exit status {status})"
            results[method] = {"status": f"{why}; see {work / f'{name}.log'}", "process_s": wall}
            continue
        raw = json.loads((work / f"{method}.json").read_text())
        results[method] = {"status": "ok", **figures(method, raw, shape, setup, peak_flops),
                           "peak_rss_mib": rss if len(methods) == 1 else None, "process_s": wall,
                           "device": raw["device"], "torch": raw["torch"], "raw": raw}
    return results


def markdown(results: dict, shape: Shape, setup: dict, args: argparse.Namespace, elapsed: float) -> str:
    memory = "peak RSS MiB" if shape.device == "cpu" else "peak GPU GiB"
    lines = [f"Command: `python bench/gpu_check.py {' '.join(sys.argv[1:])}`; {elapsed:.0f} s in all.", "",
             f"Model: tiny {shape.tiny['architecture']} {shape.tiny}, {shape.dtype} on {shape.device}; "
             f"{setup['vocab']:,}-token vocabulary; every sequence {shape.seq_len} tokens (prompt {shape.prompt_len}); "
             f"batch {BATCH}, one micro-batch; {shape.warmup} warm-up + {shape.steps} timed steps; "
             f"MFU against {args.peak_flops:.3g} FLOP/s.", "",
             f"| method | tokens/step | step s | tokens/s | {memory} | MFU | process s | status |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for method, r in results.items():
        if r["status"] != "ok":
            lines.append(f"| {METHODS[method].label} | | | | | | {r.get('process_s', 0):.0f} | {r['status']} |")
            continue
        memory_figure = r["peak_rss_mib"] if shape.device == "cpu" else r["peak_gpu_gib"]
        memory_cell = "-" if memory_figure is None else f"{memory_figure:,.1f}"
        lines.append(f"| {METHODS[method].label} | {r['tokens_per_step']:,.0f} | {r['step_s']:.3f} | "
                     f"{r['tokens_per_s']:,.0f} | {memory_cell} | {r['mfu']:.1%} | {r['process_s']:.0f} | ok |")
    return "\n".join(lines) + "\n"


def estimate_s(shape: Shape, setup: dict, assumed_mfu: float, peak_flops: float, overhead_s: float) -> float:
    """Seconds the whole check should take: a process start and model build per method, and every step
    (the precomputed reference's cache pass included) at `assumed_mfu` of the peak."""
    total = overhead_s * (len(METHODS) + 1)
    for method, spec in METHODS.items():
        tokens = BATCH * shape.seq_len * (2 if spec.rows == "pairs" else 1)
        n, per_token = method_flops(method, shape, setup)
        steps = shape.warmup + shape.steps
        total += steps * tokens * per_token / (assumed_mfu * peak_flops)
        if spec.loss and spec.loss.get("reference") == "precompute":  # one reference forward of every row
            cache = n * 2 + 4 * shape.tiny["num_layers"] * shape.seq_len * shape.tiny["hidden_size"]
            total += steps * tokens * cache / (assumed_mfu * peak_flops)
    return total


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="The same code on CPU with a tiny model (the test's mode).")
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "gpu", help="Results folder (default bench/out/gpu/).")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="The device's peak (default 989e12: H200 SXM bf16 dense).")
    parser.add_argument("--budget-s", type=float, default=560.0, help="Stop starting or running methods after this (default 560).")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: prepare, or one method
    return parser.parse_args()


def main() -> None:
    args = arguments()
    shape = SHAPES["tiny" if args.tiny else "gpu"]
    work = args.out / "work"
    if args.worker is not None:
        return worker(shape, args.worker, work)
    began = time.monotonic()
    deadline = began + args.budget_s
    fresh_work_folder(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1", "UFT_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           **({"CUDA_VISIBLE_DEVICES": ""} if args.tiny else {})}
    child = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), *(["--tiny"] if args.tiny else [])]
    if not shape.isolated:  # --tiny: the rows and every method in one process, its imports paid once
        results = run_methods(list(METHODS), child, work, env, deadline, shape, None, args.peak_flops)
        setup = json.loads((work / "setup.json").read_text())
    else:
        status, _, _ = run_child([*child, "--worker", "prepare"], work / "prepare.log", env, args.budget_s)
        if status != 0:
            sys.exit(f"gpu_check: preparing the rows failed (exit status {status}); see {work / 'prepare.log'}")
        setup = json.loads((work / "setup.json").read_text())
        guess = estimate_s(shape, setup, assumed_mfu=0.35, peak_flops=args.peak_flops, overhead_s=40)
        print(f"gpu_check: estimated {guess:.0f} s (35% MFU, 40 s per process); budget {args.budget_s:.0f} s",
              file=sys.stderr)
        results = {}
        for method in METHODS:
            results.update(run_methods([method], child, work, env, deadline, shape, setup, args.peak_flops))
            print(f"gpu_check: {method}: {results[method]['status']} ({time.monotonic() - began:.0f} s so far)",
                  file=sys.stderr, flush=True)
    elapsed = time.monotonic() - began
    table = markdown(results, shape, setup, args, elapsed)
    print(table)
    with atomic_path(args.out / "results.md", overwrite=True) as tmp:
        tmp.write_text(table, encoding="utf-8")
    write_json(args.out / "results.json", {"command": ["python", "bench/gpu_check.py", *sys.argv[1:]],
                                          "shape": shape._asdict(), "setup": setup, "peak_flops": args.peak_flops,
                                          "elapsed_s": elapsed, "results": results})


MARKER = ".gpu_check"  # a work folder holding it was made by this script and may be emptied by it


def fresh_work_folder(work: Path) -> None:
    """An empty work folder: a missing one made, one this script made before emptied; any other
    existing folder is refused, never removed (--out may be a folder of the user's)."""
    if work.exists() and not (work / MARKER).is_file():
        sys.exit(f"gpu_check: {work} exists and was not made by gpu_check; choose another --out")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / MARKER).write_text("work folder of bench/gpu_check.py\n", encoding="utf-8")


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
