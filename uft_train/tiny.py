"""A tiny Llama, Mistral or Qwen2 built from its transformers config (no download), for the demo, the
tests and CPU benchmarks.

With the defaults and the bundled 512-token tokenizer the Llama has 147,776 parameters: the embedding
and the untied unembedding (32,768 each), two layers of 41,088 (attention 4 x 64 x 64, MLP 3 x 64 x
128, two norms) and the final norm. Mistral has the same parameters (its difference is the sliding-
window attention mask); Qwen2 adds its q/k/v biases (3 x 64 per layer: 148,160). A forward pass on an
[8, 256] batch takes tens of milliseconds on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from uft_train.errors import TrainError

Architecture = Literal["llama", "mistral", "qwen2"]
ARCHITECTURES: dict[str, tuple[Callable[..., PretrainedConfig], Callable[..., PreTrainedModel]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
}


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, *, architecture: Architecture = "llama",
                     hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int | None = None,
                     intermediate_size: int = 128, max_position_embeddings: int = 512, seed: int = 0,
                     attn_implementation: str = "sdpa", device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM of `architecture` over `tokenizer`'s vocabulary in `dtype` on `device`; the same
    seed gives the same weights on the same device.

    On the CPU it is built in float32 and then cast to `dtype` (the weights every CPU test and result
    was made with). On another device it is built there, in `dtype`, directly: a Mistral-7B-shaped
    model built on the CPU in float32 would take 28 GB of host memory and minutes before the copy
    (bench/gpu_check.py). Its weights are drawn by that device's generator, so they differ from the
    CPU's. `num_kv_heads` (grouped-query attention; None = `num_heads`) must divide `num_heads`.

    Dropout is 0 (implicit-reward losses need `r == 0` at step 0) and the unembedding is untied, as
    in the 7B models the recipes target, so LoRA on the attention/MLP never touches it either way.
    Each architecture keeps what tells it apart from Llama in a real checkpoint: Mistral its
    sliding-window mask (window = `max_position_embeddings`, so a sequence within the position range
    sees all of itself and results do not depend on the window), Qwen2 its q/k/v biases, drawn
    like the weights (transformers zeroes them; a trained Qwen2's are far from zero, and zeros would
    leave the bias path untested). Llama and Mistral have the same parameters, so the same seed gives
    them the same weights. Everything else is the config class's default."""
    config_class, model_class = ARCHITECTURES[architecture]
    kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if kv_heads <= 0 or num_heads % kv_heads:
        raise TrainError("model.tiny.num_kv_heads", f"must be > 0 and divide model.tiny.num_heads {num_heads}",
                         got=kv_heads, fix="Set it to a divisor of num_heads, or null (= num_heads).")
    device = torch.device(device)
    extras: dict[str, dict[str, object]] = {"llama": {"attention_bias": False, "mlp_bias": False},
                                            "mistral": {"sliding_window": max_position_embeddings}, "qwen2": {}}
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=kv_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False, attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, attn_implementation=attn_implementation,
        **extras[architecture],
    )
    model = _seeded_model(model_class, config, seed=seed, device=device, dtype=dtype)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        # Chat generation stops at the end of the assistant's turn as well as at `<|eos|>`.
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    return model


def _seeded_model(model_class: Callable[..., PreTrainedModel], config: PretrainedConfig, *, seed: int,
                  device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """The model of `config` drawn from `seed`: on the CPU in float32 and then cast; elsewhere on
    `device` in `dtype` directly. Biases are drawn like the weights."""
    on_cpu = device.type == "cpu"
    accelerators = [] if device.type in ("cpu", "meta") else [device]
    # fork_rng: seed the initialisation without moving the caller's global RNG streams (the CPU's, and
    # the device's when the model is built there).
    with torch.random.fork_rng(devices=accelerators, device_type=device.type if accelerators else "cuda"):
        torch.manual_seed(seed)
        if on_cpu:
            model = model_class(config)
        else:
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.normal_(0.0, config.initializer_range)
    if on_cpu:
        model = model.float()  # float32; PreTrainedModel.float, unlike .to, is typed as a method
        # nn.Module.to: PreTrainedModel.to only adds quantization checks (no quantized tiny model), and its
        # decorator hides the signature from mypy.
        model = torch.nn.Module.to(model, dtype)
    return model
