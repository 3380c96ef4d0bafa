"""A tiny Llama built from a config (no download), for the demo, the tests and CPU benchmarks.

With the defaults and the bundled 512-token tokenizer it has 147,776 parameters: the embedding and
the untied unembedding (32,768 each), two layers of 41,088 (attention 4 x 64 x 64, MLP 3 x 64 x 128,
two norms) and the final norm. A forward pass on an [8, 256] batch takes tens of milliseconds on CPU.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, *, hidden_size: int = 64, num_layers: int = 2,
                     num_heads: int = 4, intermediate_size: int = 128, max_position_embeddings: int = 512,
                     seed: int = 0) -> LlamaForCausalLM:
    """A float32 `LlamaForCausalLM` over `tokenizer`'s vocabulary; the same seed gives the same weights.

    Dropout is 0 (implicit-reward losses need `r == 0` at step 0) and the unembedding is untied, as
    in the 7B models the recipes target, so LoRA on the attention/MLP never touches it either way.
    """
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
        attention_dropout=0.0, attention_bias=False, mlp_bias=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # fork_rng: seed the initialisation without moving the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model = model.float()  # float32; PreTrainedModel.float, unlike .to, is typed as a method
    end_of_turn = tokenizer.convert_tokens_to_ids("<|end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        # Chat generation stops at the end of the assistant's turn as well as at `<|eos|>`.
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, end_of_turn]
    return model
