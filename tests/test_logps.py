"""Packed rows and the chunked LM head (uft_train/logps.py) against the padded, whole-logits path:
equal log-probs and gradients on Llama, Mistral and Qwen2 built from their configs, and no tensor of
all positions' logits kept for the backward."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from uft_train.data import Example
from uft_train.logps import (
    attention_ratio,
    chunked_token_logps,
    from_masks,
    layout,
    pack_rows,
    padded_tokens,
    row_plan,
    sequence_logps,
)

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 97
DIMS = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 128,
        "tie_word_embeddings": False}
ARCHITECTURES = {
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**DIMS)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**DIMS, sliding_window=128)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**DIMS)),
}


def example(row: int, length: int, prompt_len: int) -> Example:
    ids = tuple((7 * row + 3 * t) % (VOCAB - 1) + 1 for t in range(length))
    return Example(row, "sft", 1.0, None, None, "g", ids, prompt_len, f"id{row}", "s")


EXAMPLES = [example(0, 23, 9), example(1, 7, 3), example(2, 16, 15), example(3, 11, 2), example(4, 19, 6)]


def test_pack_rows_first_fit_decreasing() -> None:
    # Longest first: 5 -> row 0 (full), 4 -> row 1 (1 free), 3 -> row 2 (2 free), 2 -> row 2.
    assert pack_rows([5, 3, 4, 2], 5) == [[0], [2], [1, 3]]
    assert pack_rows([5, 3, 4, 2], 14) == [[0, 2, 1, 3]]
    assert padded_tokens([5, 3, 4, 2], padding_free=False) == 4 * 5 - 14
    assert padded_tokens([5, 3, 4, 2], padding_free=True, attention=None) == 0  # varlen: one row
    # Dense-mask attention: width 5 costs (5 + 25 / 2) + 2 x (5 + 25) = 77.5 at attention 1, width 10
    # 2 x (10 + 100) = 220, width 14 (one row) 14 + 196 = 210: width 5, 1 slot of padding. At
    # attention 0 only slots count: 15, 20, 14, so one row.
    assert row_plan([5, 3, 4, 2], padding_free=True, attention=1.0) == ([[0], [2], [1, 3]], 5)
    assert padded_tokens([5, 3, 4, 2], padding_free=True, attention=0.0) == 0


def test_attention_ratio_counts_the_decoders_linear_parameters() -> None:
    # Per layer: q 32x32, k and v 32x16 (2 KV heads of 8), o 32x32, MLP 3 x 32x64, two norms of 32.
    layer = 1024 + 512 + 512 + 1024 + 3 * 2048 + 64
    expected = 4 * 2 * 32 / (2 * (2 * layer + 32))  # + the final norm
    assert attention_ratio(ARCHITECTURES["llama"]()) == pytest.approx(expected, rel=1e-12)


def test_packed_layout_places_tokens_and_positions() -> None:
    a, b = example(0, 4, 2), example(1, 3, 1)
    packed = layout([a, b], pad_id=0, padding_free=True, attention=None)
    assert packed.input_ids.tolist() == [[*a.input_ids, *b.input_ids]]
    assert packed.position_ids is not None and packed.position_ids.tolist() == [[0, 1, 2, 3, 0, 1, 2]]
    assert packed.attention_mask is None
    # a's completion tokens 2, 3 are predicted at 1, 2; b's tokens 1, 2 (packed 5, 6) at 4, 5.
    assert packed.where.tolist() == [1, 2, 4, 5]
    assert packed.targets.tolist() == [a.input_ids[2], a.input_ids[3], b.input_ids[1], b.input_ids[2]]
    assert packed.owner.tolist() == [0, 0, 1, 1] and packed.slot.tolist() == [0, 1, 0, 1]
    assert packed.padded == 0
    padded = layout([a, b], pad_id=0, padding_free=False)
    assert padded.attention_mask is not None and padded.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert padded.where.tolist() == [1, 2, 4, 5] and padded.padded == 1


def adapted(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0)
    model = get_peft_model(ARCHITECTURES[name](), config)
    torch.manual_seed(1)
    for name_, param in model.named_parameters():  # a nonzero adapter, so its gradients are compared too
        if "lora_B" in name_:
            torch.nn.init.normal_(param, std=0.05)
    return model


def logps_and_grads(model: torch.nn.Module, **how: bool | float | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logps = sequence_logps(model, layout(EXAMPLES, pad_id=0, **how))
    (logps * torch.linspace(0.5, 1.5, len(EXAMPLES))).sum().backward()
    return logps.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_packed_rows_equal_padded_rows(name: str) -> None:
    model = adapted(name).train()
    padded, padded_grads = logps_and_grads(model, padding_free=False)
    for attention in (None, 1.0):  # one row; rows as wide as the longest example
        packed, packed_grads = logps_and_grads(model, padding_free=True, attention=attention)
        torch.testing.assert_close(packed, padded, rtol=0, atol=1e-5)
        for got, want in zip(packed_grads, padded_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # The same as each example run alone, unpadded: the packing masks attention between examples.
    with torch.no_grad():
        alone = torch.cat([sequence_logps(model, layout([e], pad_id=0, padding_free=False)) for e in EXAMPLES])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-5)
    # Without the restarting position_ids one row is one sequence to the model: the examples see each other.
    with torch.no_grad():
        one_row = layout(EXAMPLES, pad_id=0, padding_free=True, attention=None)
        unmasked = sequence_logps(model, dataclasses.replace(one_row, position_ids=None))
    assert float((unmasked - alone).abs().max()) > 1e-2
    assert bool((padded < 0).all())


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen head", "trained head"])
def test_chunks_equal_one_pass_and_keep_no_whole_logits(frozen: bool) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    head = torch.nn.Linear(16, 300, bias=True).requires_grad_(not frozen)
    targets = torch.randint(0, 300, (50,))
    weights = torch.rand(50)
    whole = torch.log_softmax(head(hidden), -1).gather(-1, targets[:, None]).squeeze(-1)
    inputs = [hidden, *([] if frozen else [head.weight, head.bias])]
    grads_whole = torch.autograd.grad((whole * weights).sum(), inputs)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked = chunked_token_logps(hidden, head, targets, chunk=8)
    grads_chunked = torch.autograd.grad((chunked * weights).sum(), inputs)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    for got, want in zip(grads_chunked, grads_whole, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Kept for the backward: d logp / d hidden (50 x 16) for a frozen head, else each chunk's input
    # (8 x 16) and the head's parameters; never a chunk's logits (8 x 300), let alone all 50 x 300.
    assert saved and max(saved) <= (50 * 16 if frozen else 16 * 300)
    assert 8 * 300 not in saved


def test_from_masks_matches_the_layout() -> None:
    model = adapted("llama").eval()
    batch = layout(EXAMPLES, pad_id=0, padding_free=False)
    mask = batch.attention_mask
    assert mask is not None
    loss_mask = torch.zeros_like(batch.input_ids, dtype=torch.bool)
    for b, e in enumerate(EXAMPLES):
        loss_mask[b, e.prompt_len:len(e.input_ids)] = True
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, from_masks(batch.input_ids, mask, loss_mask)),
                                   sequence_logps(model, batch), rtol=0, atol=0)
