"""Checkpoints: adapter (safetensors), optimizer, scheduler, RNG and step, written atomically; and what
the run was, so that a resumed run is the same run (README, "Resume").

`checkpoints/step-000012/` appears complete or not at all (uftdata.atomic); resuming restores the
state and the step, and the step gives the batch (the schedule is a function of seed and epoch).
Each checkpoint also holds the resolved recipe (`recipe.yaml`) and `identity.json`: the content hash
of the rows read and the base model's and tokenizer's fingerprints (`model.model_identity`). A rerun
compares them with its own before it trains: only the keys of `MAY_DIFFER` may change.
"""

from __future__ import annotations

import json
import pickle
import random
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import yaml
from peft import PeftModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from uft_train import fsdp
from uft_train.config import Recipe, load_recipe, recipe_to_dict, recipe_to_yaml
from uft_train.errors import TrainError
from uft_train.step import Run
from uftdata.atomic import atomic_path
from uftdata.errors import UftDataError

STATE = "trainer_state.pt"
RECIPE = "recipe.yaml"
IDENTITY = "identity.json"

# What a resumed run may change: when it evaluates, logs and saves, and the data gate, none of which
# changes a step. output.dir is the folder itself (it may have been moved) and output.overwrite says
# whether to resume at all. Everything else, the data and the model included, must be as it was.
MAY_DIFFER = frozenset({"train.eval_every", "train.log_every", "train.save_every", "output.tensorboard",
                        "data.max_drop_share", "output.dir", "output.overwrite"})
START_OVER = "Set output.overwrite=true to start over, or choose another output.dir."


def _unwrap(model: torch.nn.Module) -> PeftModel:
    """The adapter-carrying model, inside DDP or not."""
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    if not isinstance(inner, PeftModel):  # uft_train.model.add_adapter made it: a bug otherwise
        raise TypeError(f"a run's model is a PeftModel (got {type(inner).__name__})")
    return inner


def save_checkpoint(run_dir: Path, run: Run, step: int) -> Path:
    """`checkpoints/step-NNNNNN/` after `step` steps. One that exists already holds that very state (a
    non-finite loss saves the last good step, which `save_every` may have saved): it is kept.

    Every rank calls it: under FSDP the adapter and the optimizer state are gathered whole first, so
    the files are those a one-process run writes."""
    target = run_dir / "checkpoints" / f"step-{step:06d}"
    adapter, optimizer = fsdp.trainable_state(_unwrap(run.model)), fsdp.optimizer_state(run.optimizer)
    if run.rank != 0 or target.is_dir():
        return target
    with atomic_path(target) as tmp:
        _unwrap(run.model).save_pretrained(str(tmp / "adapter"), safe_serialization=True, state_dict=adapter)
        torch.save({
            "optimizer": optimizer,
            "scheduler": run.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state(),
        }, tmp / STATE)
        (tmp / RECIPE).write_text(recipe_to_yaml(run.recipe), encoding="utf-8")
        (tmp / IDENTITY).write_text(json.dumps(run.identity, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / "step.json").write_text(json.dumps({"step": step}) + "\n")
    return target


def latest_checkpoint(run_dir: Path) -> Path | None:
    folder = run_dir / "checkpoints"
    found = sorted(p for p in folder.glob("step-*") if (p / "step.json").is_file()) if folder.is_dir() else []
    return found[-1] if found else None


def check_resume(path: Path, recipe: Recipe | None, identity: dict[str, str]) -> None:
    """Refuse to continue the run of checkpoint `path` with another recipe (None: not compared) or
    other `identity` values: one line listing each differing key `old -> new`."""
    differences = (recipe_differences(_stored_recipe(path), recipe) if recipe is not None else [])
    stored = _stored_identity(path)
    differences += [f"{key}: {_short(stored.get(key))} -> {_short(value)}"
                    for key, value in identity.items() if stored.get(key) != value]
    if differences:
        raise TrainError(str(path), f"belongs to a run with other settings, data or model ({'; '.join(differences)})",
                           fix=f"To resume it, rerun with the values of {path / RECIPE}. {START_OVER}")


def recipe_differences(old: Recipe, new: Recipe) -> list[str]:
    """`key: old -> new` for each recipe key outside MAY_DIFFER whose value differs, in recipe order."""
    before, after = _leaves(recipe_to_dict(old)), _leaves(recipe_to_dict(new))
    keys = list(after) + [k for k in before if k not in after]
    missing = object()
    return [f"{key}: {_show(before.get(key, missing))} -> {_show(after.get(key, missing))}"
            for key in keys if key not in MAY_DIFFER and before.get(key, missing) != after.get(key, missing)]


def _leaves(value: object, prefix: str = "") -> dict[str, object]:
    """A nested mapping as dotted keys (list items by index: mixture.sources.0.take)."""
    items: Iterable[tuple[object, object]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, object] = {}
    for key, item in items:
        out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _show(value: object) -> str:
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return "(absent)"
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _short(value: object) -> str:
    """A sha256 as its first 12 hex digits: enough to see that two differ."""
    text = str(value)
    return text[:12] if len(text) == 64 else text


def _stored_recipe(path: Path) -> Recipe:
    file = path / RECIPE
    if not file.is_file():
        raise _unchecked(path, f"has no {RECIPE}")
    try:
        return load_recipe(file)
    except UftDataError as error:
        raise _unchecked(path, f"has a {RECIPE} that does not load ({error.line().splitlines()[0]})") from None


def _stored_identity(path: Path) -> dict:
    file = path / IDENTITY
    if not file.is_file():
        raise _unchecked(path, f"has no {IDENTITY}")
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _unchecked(path, f"has an {IDENTITY} that cannot be read ({error})") from None
    if not isinstance(stored, dict):
        raise _unchecked(path, f"has an {IDENTITY} that is not a mapping")
    return stored


def _unchecked(path: Path, what: str) -> TrainError:
    """Without what the run was, a resume could silently change it: refuse rather than guess (a
    recipe.yaml alone does not tell whether the data or the model changed)."""
    return TrainError(str(path), f"{what}: it cannot be checked against this run (written by an older "
                        "uft-train, or damaged), so it is not resumed", fix=START_OVER)


def load_checkpoint(path: Path, run: Run) -> int:
    """Restore adapter weights, optimizer, scheduler and RNG; return the step to continue from."""
    from peft import set_peft_model_state_dict

    try:
        weights = load_file(str(path / "adapter" / "adapter_model.safetensors"))
        state = torch.load(path / STATE, weights_only=False)  # our own file: optimizer state and RNG tuples
        if fsdp.is_sharded(run.model):
            fsdp.load_trainable(run.model, weights)
            fsdp.load_optimizer(run.optimizer, state["optimizer"])
        else:
            set_peft_model_state_dict(_unwrap(run.model), weights)
            run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        step = int(json.loads((path / "step.json").read_text())["step"])
    except (OSError, SafetensorError, RuntimeError, ValueError, KeyError, TypeError, EOFError,
            pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise TrainError(str(path), f"is damaged and cannot be resumed ({' '.join(str(error).split())[:160]})",
                           fix=f"Remove that folder to resume from an earlier checkpoint. {START_OVER}") from None
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    return step
