"""The policy: a causal LM with a LoRA adapter; the reference is the same model with it disabled.

DESIGN.md, "Reference = the policy at the start of the stage": first stages use the base model
with the adapter disabled (no second copy); second stages merge the stage-1 adapter into the base
weights in memory and train a fresh adapter on top. Dropout is off for implicit-reward losses, or
`r != 0` at step 0.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uft_train.config import Recipe

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TINY_BASE_SEED = 0  # the tiny "base model" is the same whatever the training seed


def load_tokenizer_and_model(recipe: Recipe, tokenizer_dir: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the base model (stage-1 adapter merged in, if any), before LoRA."""
    cfg = recipe.model
    if cfg.name == "tiny":
        from uft_train.tiny import build_tiny_model
        from uft_train.tokenizer import load_or_build_tokenizer

        tokenizer = load_or_build_tokenizer(tokenizer_dir)
        tiny = cfg.tiny
        model = build_tiny_model(tokenizer, hidden_size=tiny.hidden_size, num_layers=tiny.num_layers,
                                 num_heads=tiny.num_heads, intermediate_size=tiny.intermediate_size,
                                 max_position_embeddings=tiny.max_position_embeddings, seed=TINY_BASE_SEED)
        model = model.to(DTYPES[cfg.dtype])
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.name, revision=cfg.revision,
                                                  trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            cfg.name, revision=cfg.revision, dtype=DTYPES[cfg.dtype],
            trust_remote_code=cfg.trust_remote_code, use_safetensors=True,
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # masks come from lengths, so pad may equal eos
    if cfg.init_adapter:
        with quiet_peft():
            model = PeftModel.from_pretrained(model, cfg.init_adapter).merge_and_unload()
    return tokenizer, model


@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft reads a property transformers 5 deprecated (a FutureWarning per model); not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_adapter(model: PreTrainedModel, recipe: Recipe, *, implicit_reward: bool) -> PeftModel:
    lora = recipe.lora
    config = PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.targets), bias="none", task_type="CAUSAL_LM",
        lora_dropout=0.0 if implicit_reward else lora.dropout,
    )
    with quiet_peft():
        peft_model = get_peft_model(model, config)
    if recipe.model.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable()
        peft_model.enable_input_require_grads()
    return peft_model


def reference(model: torch.nn.Module) -> AbstractContextManager:
    """Context in which `model` computes the reference: the adapter disabled."""
    inner = model.module if hasattr(model, "module") else model  # DDP wraps the PeftModel
    return inner.disable_adapter() if isinstance(inner, PeftModel) else nullcontext()


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   loss_mask: torch.Tensor) -> torch.Tensor:
    """Per-example log-prob of the completion: token log-probs (float32) summed over `loss_mask`.

    Logits are computed only from the batch's first completion-predicting position on (the
    model's `logits_to_keep`, where it has one): with a real vocabulary the LM head's output is the
    largest tensor of a step, and the prompt positions' logits are masked out anyway. The
    log-softmax is taken as gathered logit minus logsumexp, without a [B, T, V] log-prob copy."""
    first = int(loss_mask.to(torch.int8).argmax(dim=1).min())  # earliest completion token in the batch
    start = max(first - 1, 0)  # the logit at position p predicts the token at p + 1
    kept = input_ids.shape[1] - start
    if accepts_logits_to_keep(model):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=kept).logits
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, start:]
    logits = logits[:, :-1].float()
    targets = input_ids[:, start + 1:]
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * loss_mask[:, start + 1:].to(token_logps.dtype)).sum(-1)


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    inner = model.module if hasattr(model, "module") else model  # DDP
    base = inner.get_base_model() if isinstance(inner, PeftModel) else inner
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def model_fingerprint(recipe: Recipe, tokenizer_dir: Path) -> dict:
    """What identifies the reference model, for the reference-cache key."""
    cfg = recipe.model
    if cfg.name == "tiny":
        model_id = {"tiny": vars(cfg.tiny), "seed": TINY_BASE_SEED}
    else:
        model_id = {"name": cfg.name, "revision": cfg.revision}
    return {
        "model": model_id,
        "init_adapter": _folder_hash(Path(cfg.init_adapter)) if cfg.init_adapter else None,
        "dtype": cfg.dtype,
        "template": cfg.template,
        "tokenizer": _folder_hash(tokenizer_dir) if cfg.name == "tiny" else None,
    }


def _folder_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(json.dumps(str(path.relative_to(folder))).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
