"""Peak memory of `uft-train` where a real vocabulary makes the LM head the largest tensor of a step.

    python bench/bench_memory.py [--vocab 32000,151936] [--steps 2] [--json FILE]

Two `sft` steps (batch 8, one micro-batch, AdamW, LoRA r 16 on all projections) of
`uft_train.train.train` on the 20 real UltraChat conversations of ../shared/samples (unfolded by
`uftdata unfold`: 68 rows, one per assistant turn), rendered with recipes/mix_20k_20k.yaml's template and
lengths (max_length 2048, max_prompt_length 1024; the 16
rows longer are dropped) and tokenized by Mistral-7B-v0.1's tokenizer
(uft_train/shipped.py's "mistral", 32,000 pieces). The model is a tiny Llama of hidden size 64
(2 layers, 4 heads, MLP 128), float32 on CPU, whose vocabulary is the tokenizer's 32,000 or, with
the same token ids, widened to Qwen2's padded 151,936 (`resize_token_embeddings`): the model is a
few MB either way, so the peak is the LM head's logits and their gradient.

Each vocabulary runs in its own process; its peak RSS is ru_maxrss from os.wait4 (Linux: KiB),
and this parent imports only the standard library so that its own memory does not count (see
bench_data.py). The child replaces `uft_train.train.load_tokenizer_and_model` with the model and
tokenizer above, so the same script measures any commit's uft_train (the tokenizer file is read
from this checkout's uft_train/shipped.py): put that tree first on PYTHONPATH to measure it.
Markdown to stdout; work files in bench/out/memory/ (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench_data import run_process
from report import machine

BENCH = Path(__file__).resolve().parent
SAMPLE = BENCH.parents[1] / "shared" / "samples" / "ultrachat_200k_train_sft.json"
RECIPE = BENCH.parent / "recipes" / "mix_20k_20k.yaml"
SHIPPED = BENCH.parent / "uft_train" / "shipped.py"
TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "max_position_embeddings": 4096}
BATCH = 8


def recipe(work: Path, steps: int) -> dict:
    import yaml

    paper = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    return {
        "model": {"name": "tiny", "dtype": "float32", "tiny": TINY, "template": paper["model"]["template"]},
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "targets": paper["lora"]["targets"]},
        "data": {"path": str(work / "sft.parquet"), "max_length": paper["data"]["max_length"],
                 "max_prompt_length": paper["data"]["max_prompt_length"],
                 "max_drop_share": 0.5},  # 16 of the 68 rows are longer than the paper's 2048 tokens
        "loss": {"name": "sft"},
        "optim": {"lr": 1e-5, "warmup_ratio": 0.0, "schedule": "constant"},
        "train": {"seed": 0, "epochs": 10, "max_steps": steps, "batch_size": BATCH, "micro_batch_size": BATCH,
                  "device": "cpu", "autocast_bf16": False},
        "output": {"dir": str(work / "run"), "overwrite": True},
    }


def mistral_tokenizer():  # noqa: ANN201 - a transformers tokenizer
    """This checkout's shipped Mistral tokenizer, loaded from its file so that an older uft_train on
    PYTHONPATH (without uft_train/shipped.py) is measured with the same tokenizer."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_shipped", SHIPPED)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench: cannot load {SHIPPED}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.shipped_tokenizer("mistral")


def child(work: Path, vocab: int, steps: int) -> None:
    """Two sft steps at `vocab`; writes the run's metrics and the model's sizes to result.json."""
    import torch

    import uft_train.train as train_module
    from uft_train.config import recipe_from_mapping
    from uft_train.tiny import build_tiny_model

    tokenizer = mistral_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    sizes: dict[str, int] = {}

    def load(_recipe: object, tokenizer_dir: Path | None) -> tuple:
        model = build_tiny_model(tokenizer, **{k: v for k, v in TINY.items()})
        if vocab != model.config.vocab_size:
            model.resize_token_embeddings(vocab, mean_resizing=False)
        sizes.update(vocab=model.config.vocab_size, parameters=sum(p.numel() for p in model.parameters()))
        return tokenizer, model

    train_module.load_tokenizer_and_model = load  # type: ignore[assignment]
    shutil.rmtree(work / "run", ignore_errors=True)
    train_module.train(recipe_from_mapping(recipe(work, steps), "bench_memory"))
    metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    (work / "result.json").write_text(json.dumps({**sizes, "tokens": [m["tokens"] for m in metrics],
                                                  "threads": torch.get_num_threads()}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", default="32000,151936", help="Comma-separated vocabulary sizes (default 32000,151936).")
    parser.add_argument("--steps", type=int, default=2, help="sft steps per run (default 2).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    parser.add_argument("--work", type=Path, default=BENCH / "out" / "memory", help="Work folder.")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # internal: one vocabulary
    args = parser.parse_args()
    if args.worker is not None:
        return child(args.work, args.worker, args.steps)
    if not SAMPLE.is_file():
        sys.exit(f"bench: {SAMPLE} is missing (the real UltraChat sample)")
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "",
           "TQDM_DISABLE": "1"}
    unfold = [sys.executable, "-c", "from uftdata.cli import main; main()", "unfold", str(SAMPLE),
              "-o", str(args.work / "sft.parquet"), "--overwrite"]
    subprocess.run(unfold, check=True, env=env, stdout=subprocess.DEVNULL)
    rows = []
    for vocab in (int(v) for v in args.vocab.split(",")):
        load = os.getloadavg()[0]
        wall, peak = run_process([sys.executable, str(Path(__file__).resolve()), "--work", str(args.work),
                                  "--steps", str(args.steps), "--worker", str(vocab)], args.work / f"{vocab}.log", env)
        result = json.loads((args.work / "result.json").read_text())
        rows.append({**result, "peak_rss_mib": peak, "process_s": wall, "load_1m": load})
        print(f"  vocab {vocab}: {peak:,.0f} MiB, {wall:.1f} s, load {load:.2f}", file=sys.stderr)
    info = machine()
    command = ["python", "bench/bench_memory.py", *sys.argv[1:]]
    print(f"`{' '.join(command)}`: {args.steps} `sft` steps, batch {BATCH}, 20 UltraChat conversations; "
          f"{info['nproc']} CPUs, {info['ram_gib']} GiB RAM.\n")
    print("| vocabulary | parameters | tokens per step | peak RSS MiB | process s | load at start |")
    print("|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['vocab']:,} | {r['parameters']:,} | {', '.join(f'{t:,}' for t in r['tokens'])} | "
              f"{r['peak_rss_mib']:,.0f} | {r['process_s']:.1f} | {r['load_1m']:.2f} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "machine": info, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
