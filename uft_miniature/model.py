"""Loading what the benchmark evaluates: the base model, and a finished run's model (its base with
the stage-1 adapter merged, when it is a second stage, plus its own adapter merged)."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from uft_train.config import load_recipe
from uft_train.model import load_tokenizer_and_model, quiet_peft

hf_logging.disable_progress_bar()  # a "Loading weights" bar per evaluation would bury the benchmark's log


def load_base(folder: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    return tokenizer, model.to(device()).eval()  # type: ignore[arg-type]  # PreTrainedModel.to is typed through functools.wraps, as if unbound


def load_run(run_dir: Path, base: Path) -> PreTrainedModel:
    """The trained policy of `run_dir`, built as the trainer built it (its saved, resolved recipe)."""
    recipe = load_recipe(run_dir / "recipe.yaml", [f"model.name={base}"])
    _, model = load_tokenizer_and_model(recipe, run_dir / "tokenizer")
    with quiet_peft():
        merged = PeftModel.from_pretrained(model, str(run_dir / "adapter")).merge_and_unload()
    return merged.to(device()).eval()


def device() -> str:
    """Evaluate where the trainer trains: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"
