"""Checkpoints: adapter (safetensors), optimizer, scheduler, RNG and step, written atomically.

`checkpoints/step-000012/` appears complete or not at all (uftdata.atomic); resuming restores the
state and the step, and the step gives the batch (the schedule is a function of seed and epoch).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from uftdata.atomic import atomic_path

STATE = "trainer_state.pt"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(run_dir: Path, run, step: int) -> Path:  # noqa: ANN001 - uft_train.train.Run
    if run.rank != 0:
        return run_dir
    target = run_dir / "checkpoints" / f"step-{step:06d}"
    with atomic_path(target) as tmp:
        _unwrap(run.model).save_pretrained(tmp / "adapter", safe_serialization=True)
        torch.save({
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
        }, tmp / STATE)
        (tmp / "step.json").write_text(json.dumps({"step": step}) + "\n")
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / "checkpoints"
    found = sorted(p for p in folder.glob("step-*") if (p / "step.json").is_file()) if folder.is_dir() else []
    return found[-1] if found else None


def load_checkpoint(path: Path, run) -> int:  # noqa: ANN001 - uft_train.train.Run
    """Restore adapter weights, optimizer, scheduler and RNG; return the step to continue from."""
    from peft import set_peft_model_state_dict

    weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(_unwrap(run.model), weights)
    state = torch.load(path / STATE, weights_only=False)  # our own file: optimizer state and RNG tuples
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    return int(json.loads((path / "step.json").read_text())["step"])
