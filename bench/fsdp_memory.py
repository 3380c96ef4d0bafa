"""Per-GPU memory of the model states under DDP and FSDP, measured on the sharded model itself.

    python bench/fsdp_memory.py [--worlds 1 2 4 8] [--models mistral-7b qwen2.5-32b]

For each model and world size, `torchrun --nproc_per_node W` (gloo, CPU) builds the model from its
published config on the meta device (no weights, no memory), adds uft-train's LoRA (r 16 on all seven
projections) and shards it with `uft_train.fsdp.shard`, the code a run uses. Each rank then counts
the bytes of what it holds: its shards of the bf16 base weights, of the float32 LoRA weights, their
float32 gradients and AdamW's two float32 moments; and the largest unit (a decoder layer with its
adapter, or the LM head) whole, which a forward holds gathered. The figure per GPU is the largest
rank's. DDP's is one whole copy: world 1. Activations are not included: they depend on the kernels
and the batch, and bench/gpu_check.py measures a whole step's peak on a GPU.

Markdown to stdout. The configs are written out here (the Hub's config.json of each model), so
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The fields of mistralai/Mistral-7B-v0.1's and Qwen/Qwen2.5-32B's config.json that set the shapes.
MODELS = {
    "mistral-7b": ("mistral", {"vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
                               "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
                               "tie_word_embeddings": False}),
    "qwen2.5-32b": ("qwen2", {"vocab_size": 152064, "hidden_size": 5120, "num_hidden_layers": 64,
                              "num_attention_heads": 40, "num_key_value_heads": 8, "intermediate_size": 27648,
                              "tie_word_embeddings": False}),
}
GIB = 2**30


def worker(model: str, out: Path) -> None:
    """One rank: build, shard, count; rank 0 gathers every rank's counts into `out`."""
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from torch.distributed.tensor import DTensor
    from transformers import AutoConfig, AutoModelForCausalLM

    from uft_train import fsdp

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    kind, fields = MODELS[model]
    config = AutoConfig.for_model(kind, **fields)
    with torch.device("meta"):
        base = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    adapted = get_peft_model(base, LoraConfig(r=16, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    units = _unit_bytes(adapted)
    if world > 1:
        fsdp.shard(adapted, torch.device("cpu"), world, bf16=True)

    def local(p: torch.Tensor) -> int:
        held = p.to_local() if isinstance(p, DTensor) else p
        return held.numel() * held.element_size()

    base_bytes = sum(local(p) for p in adapted.parameters() if not p.requires_grad)
    lora = sum(local(p) for p in adapted.parameters() if p.requires_grad)
    counts = {"base": base_bytes, "lora": lora, "grads": lora, "adam": 2 * lora, "unit": units if world > 1 else 0}
    gathered: list[dict] = [{}] * world
    dist.all_gather_object(gathered, counts)
    if dist.get_rank() == 0:
        out.write_text(json.dumps(gathered), encoding="utf-8")
    dist.destroy_process_group()


def _unit_bytes(model: object) -> int:
    """The largest FSDP unit whole, as `fsdp.shard` cuts them: a decoder layer (base and adapter) or the head."""
    base = model.get_base_model()  # type: ignore[attr-defined]
    layers = [m for m in base.modules() if type(m).__name__ in set(base._no_split_modules)]
    head = base.get_output_embeddings()
    return max(sum(p.numel() * p.element_size() for p in unit.parameters()) for unit in [*layers, head])


def measure(model: str, world: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "counts.json"
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world),
             str(Path(__file__).resolve()), "--worker", model, "--out", str(out)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            sys.exit(f"fsdp_memory: {model} on {world} ranks failed:\n{done.stderr[-2000:]}")
        ranks = json.loads(out.read_text(encoding="utf-8"))
    largest = max(ranks, key=lambda r: sum(r.values()))
    return {**largest, "total": sum(largest.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worlds", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.out)
    print("| model | GPUs | layout | base bf16 | LoRA | grads | AdamW | largest unit whole | per GPU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for model in args.models:
        for world in args.worlds:
            r = measure(model, world)
            layout = "one GPU / DDP" if world == 1 else "FSDP"
            cells = " | ".join(f"{r[key] / GIB:.2f}" for key in ("base", "lora", "grads", "adam", "unit", "total"))
            print(f"| {model} | {world} | {layout} | {cells} GiB |", flush=True)


if __name__ == "__main__":
    main()
