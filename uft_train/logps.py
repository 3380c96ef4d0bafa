"""Per-sequence log-probs of a micro-batch: rows packed without padding, and the LM head applied to
completion positions only, in chunks (docs/design.md, "The forward pass").

- `layout` places a micro-batch's examples in rows. Padded: one example per row, right-padded to
  the longest, with an attention mask. Packed (`train.padding_free`, the default): examples placed
  one after another in rows, `position_ids` restarting at 0 for each, `attention_mask=None` and
  `use_cache=False`, which is how transformers 5 detects packed sequences and masks attention
  between them. With flash attention (varlen kernels) the whole micro-batch is one row; with sdpa or
  eager attention, which build a dense mask over a row, rows are filled first-fit decreasing at the
  width that costs least by a FLOP estimate (`row_plan`): as wide as the longest example where
  attention is dear (small models), wider where the linear layers dominate (7B).
- `sequence_logps` runs the model once for its last hidden states and applies the LM head to the
  positions that predict a completion token only, in chunks of at most `CHUNK_BYTES` of float32
  logits. With gradients, a frozen linear head (LoRA's) has each chunk's gradient with respect to
  the hidden states computed in the forward (`FrozenHeadLogps`), any other head has each chunk
  recomputed in the backward (activation checkpointing): neither pass holds the `[B, T, V]` logits.
  Token log-probs are float32, whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from uft_train.data import Example
from uft_train.fsdp import unsharded
from uft_train.model import accepts_logits_to_keep, unwrapped

CHUNK_BYTES = 256 * 2**20  # float32 logits of one chunk of completion positions
# Model configs whose forward transforms the LM head's output: their logits come from the model itself.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


@dataclass(frozen=True)
class Layout:
    """A micro-batch's model inputs, and where its completion tokens are.

    `where[m]` is a flat position `row * width + column` whose hidden state predicts `targets[m]`,
    the `slot[m]`-th completion token of example `owner[m]`."""

    input_ids: torch.Tensor                # [rows, width]
    position_ids: torch.Tensor | None      # [rows, width]; None in padded rows (0, 1, ... per row)
    attention_mask: torch.Tensor | None    # [rows, width] in padded rows; None in packed rows
    where: torch.Tensor                    # [M]
    targets: torch.Tensor                  # [M]
    owner: torch.Tensor                    # [M]
    slot: torch.Tensor                     # [M]
    n_examples: int
    widest: int                            # the longest completion, in tokens
    tokens: int                            # real tokens (the rest of rows x width is padding)

    @property
    def padded(self) -> int:
        return self.input_ids.numel() - self.tokens

    def to(self, device: torch.device) -> Layout:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device)

        ids, where, targets, owner, slot = (t.to(device) for t in
                                            (self.input_ids, self.where, self.targets, self.owner, self.slot))
        return Layout(ids, move(self.position_ids), move(self.attention_mask), where, targets, owner, slot,
                      self.n_examples, self.widest, self.tokens)


def pack_rows(lengths: Sequence[int], width: int) -> list[list[int]]:
    """Example indices placed in rows of at most `width` tokens, first-fit decreasing (longest first,
    ties in index order): deterministic, and never more rows than examples. An example longer than
    `width` gets a row of its own."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if fits is None:
            rows.append([i])
            room.append(width - lengths[i])
        else:
            rows[fits].append(i)
            room[fits] -= lengths[i]
    return rows


def row_plan(lengths: Sequence[int], *, padding_free: bool,
             attention: float | None = None) -> tuple[list[list[int]], int]:
    """(example indices per row, row width) of a micro-batch, from its sequence lengths alone.

    Padded: one example per row. Packed with `attention=None` (varlen kernels): one row. Packed
    with dense-mask attention: the width among the longest example x 1, 2, 4, ... (and all of them
    in one row) that minimises the estimated cost, `attention` being one query-key pair's cost over
    one token's linear layers (`attention_ratio`): a row of width W costs W + attention x W^2, or
    W^2 / 2 for a row that is one example (the causal kernel skips the upper triangle)."""
    if not padding_free:
        return [[i] for i in range(len(lengths))], max(lengths)
    total = sum(lengths)
    if attention is None:
        return [list(range(len(lengths)))], total
    best: tuple[float, list[list[int]], int] | None = None
    width = max(lengths)
    while True:
        rows = pack_rows(lengths, width)
        cost = sum(width + attention * width**2 * (0.5 if len(row) == 1 and lengths[row[0]] == width else 1.0)
                   for row in rows)
        if best is None or cost < best[0]:
            best = (cost, rows, width)
        if width >= total:
            return best[1], best[2]
        width = min(2 * width, total)


def padded_tokens(lengths: Sequence[int], *, padding_free: bool, attention: float | None = None) -> int:
    """Padding slots of a micro-batch laid out as `layout` does (0 packed in one row)."""
    rows, width = row_plan(lengths, padding_free=padding_free, attention=attention)
    return len(rows) * width - sum(lengths)


def attention_ratio(model: torch.nn.Module) -> float:
    """One query-key pair's attention FLOPs over one token's linear-layer FLOPs, for `row_plan`:
    4 x layers x hidden (scores and values, per query and key) over 2 x the decoder's parameters
    outside its embedding (LoRA's included; the LM head runs on completion positions only)."""
    base = _base_model(model)
    decoder = base.get_decoder()
    assert isinstance(decoder, torch.nn.Module)
    embedding = {id(p) for p in base.get_input_embeddings().parameters()}
    linear = sum(p.numel() for p in decoder.parameters() if id(p) not in embedding)
    config = base.config.get_text_config()
    return 4 * config.num_hidden_layers * config.hidden_size / (2 * max(1, linear))


def layout(examples: Sequence[Example], pad_id: int, *, padding_free: bool = True,
           attention: float | None = None) -> Layout:
    """The micro-batch's rows: padded (one example per row, an attention mask) or packed
    (`position_ids` restarting per example, no attention mask); a pad tail of a packed row is a
    sequence of its own to the model, and nothing reads its outputs."""
    if not examples:
        raise ValueError("layout: empty micro-batch")
    lengths = [len(e.input_ids) for e in examples]
    rows, width = row_plan(lengths, padding_free=padding_free, attention=attention)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    where, targets, owner, slot = [], [], [], []
    for r, members in enumerate(rows):
        offset = 0
        for i in members:
            example, length = examples[i], lengths[i]
            ids[r, offset:offset + length] = torch.tensor(example.input_ids)
            positions[r, offset:offset + length] = torch.arange(length)
            start = r * width + offset
            # The hidden state at position t - 1 predicts the completion token at t.
            where.append(torch.arange(start + example.prompt_len - 1, start + length - 1))
            targets.append(torch.tensor(example.input_ids[example.prompt_len:]))
            owner.append(torch.full((example.completion_len,), i))
            slot.append(torch.arange(example.completion_len))
            offset += length
        positions[r, offset:] = torch.arange(width - offset)
    position_ids: torch.Tensor | None = positions if padding_free else None
    attention_mask = None if padding_free else (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return Layout(ids, position_ids, attention_mask, torch.cat(where), torch.cat(targets), torch.cat(owner),
                  torch.cat(slot), len(examples), max(e.completion_len for e in examples), sum(lengths))


def from_masks(input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> Layout:
    """A padded layout of right-padded `[B, T]` tensors: `loss_mask[b, t]` marks the tokens whose
    log-probs count (each predicted from position t - 1; position 0 never counts)."""
    rows, columns = loss_mask[:, 1:].nonzero(as_tuple=True)
    columns = columns + 1
    width = input_ids.shape[1]
    counts = torch.bincount(rows, minlength=input_ids.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(rows.numel()) - starts[rows]
    return Layout(input_ids, None, attention_mask, rows * width + columns - 1, input_ids[rows, columns], rows, slot,
                  input_ids.shape[0], int(counts.max()) if rows.numel() else 0, int(attention_mask.sum()))


def sequence_logps(model: torch.nn.Module, batch: Layout) -> torch.Tensor:
    """Per-example log-prob of the completion `[n_examples]`: float32 token log-probs summed."""
    token = _token_logps(model, batch)
    table = torch.zeros(batch.n_examples, max(batch.widest, 1), dtype=token.dtype, device=token.device)
    return table.index_put((batch.owner, batch.slot), token).sum(-1)


def _token_logps(model: torch.nn.Module, batch: Layout) -> torch.Tensor:
    base = _base_model(model)
    head = base.get_output_embeddings()
    decoder = base.get_decoder()
    plain = (not isinstance(head, torch.nn.Module) or not isinstance(decoder, torch.nn.Module)
             or not accepts_logits_to_keep(model)
             or any(getattr(base.config, key, None) not in (None, 1, 1.0) for key in LOGIT_TRANSFORMS))
    if plain:  # the model's own logits, gathered at the completion positions
        logits = _call(model, batch, logits_to_keep=0).logits
        assert logits is not None
        hidden = logits.reshape(-1, logits.shape[-1]).index_select(0, batch.where)
        return chunked_token_logps(hidden, torch.nn.Identity(), batch.targets)
    captured: list[torch.Tensor] = []
    handle = decoder.register_forward_hook(lambda _module, _args, output: captured.append(output[0]))
    try:
        _call(model, batch, logits_to_keep=1)  # logits of one position per row; the head runs below
    finally:
        handle.remove()
    hidden = captured[0]
    assert isinstance(head, torch.nn.Module)
    with unsharded(head, model):  # FSDP: the head's own unit, gathered for the chunks
        return chunked_token_logps(hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.where), head, batch.targets)


def _call(model: torch.nn.Module, batch: Layout, *, logits_to_keep: int) -> CausalLMOutputWithPast:
    """The model's forward through its outer module (DDP's, so gradients synchronise)."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 use_cache=False, logits_to_keep=logits_to_keep)


def _base_model(model: torch.nn.Module) -> PreTrainedModel:
    inner = unwrapped(model)
    base = inner.get_base_model() if isinstance(inner, PeftModel) else inner
    assert isinstance(base, PreTrainedModel)
    return base


def chunked_token_logps(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor,
                        chunk: int | None = None) -> torch.Tensor:
    """`log softmax(head(hidden))[m, targets[m]]` in float32 `[M]`, over chunks of positions.

    A chunk's logits live only while it is computed. With gradients, a frozen linear head (LoRA
    never trains it) has each position's gradient `d logp / d hidden = W[target] - softmax @ W`
    computed in the forward, chunk by chunk, and only that `[M, hidden]` tensor kept (`FrozenHeadLogps`:
    no logits kept, no recomputation); any other head has each chunk checkpointed (recomputed in
    the backward). Either way peak memory is one chunk's logits, not all M positions'."""
    if chunk is None:
        vocab = getattr(head, "out_features", None) or hidden.shape[-1]
        chunk = max(1, CHUNK_BYTES // (4 * vocab))
    if not (torch.is_grad_enabled() and hidden.requires_grad):
        return torch.cat([_chunk_logps(hidden[s:s + chunk], targets[s:s + chunk], head)
                          for s in range(0, hidden.shape[0], chunk)])
    if isinstance(head, torch.nn.Linear) and not any(p.requires_grad for p in head.parameters()):
        logps: torch.Tensor = FrozenHeadLogps.apply(hidden, head.weight, head.bias, targets, chunk)
        return logps
    if hidden.shape[0] <= chunk:
        return _chunk_logps(hidden, targets, head)
    return torch.cat([checkpoint(_chunk_logps, hidden[s:s + chunk], targets[s:s + chunk], head, use_reentrant=False)
                      for s in range(0, hidden.shape[0], chunk)])


def _chunk_logps(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class FrozenHeadLogps(torch.autograd.Function):
    """Token log-probs through a frozen linear head, whose backward needs no logits: the gradient of
    `logp_m` with respect to `hidden_m` is `W[t_m] - softmax_m @ W`, computed per chunk in the
    forward (float32 softmax; the product in the head's dtype, as autograd's own backward does)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, hidden: torch.Tensor, weight: torch.Tensor,
                bias: torch.Tensor | None, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        logps, jacobian = [], []
        for start in range(0, hidden.shape[0], chunk):
            t = targets[start:start + chunk]
            logits = torch.nn.functional.linear(hidden[start:start + chunk], weight, bias).float()
            norm = torch.logsumexp(logits, dim=-1, keepdim=True)
            logps.append((logits.gather(-1, t.unsqueeze(-1)) - norm).squeeze(-1))
            probs = logits.sub_(norm).exp_()  # in place: the chunk's logits are not needed again
            jacobian.append((weight[t] - (probs.to(weight.dtype) @ weight)).to(hidden.dtype))
        ctx.save_for_backward(torch.cat(jacobian))
        return torch.cat(logps)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        (jacobian,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad.unsqueeze(-1).to(jacobian.dtype) * jacobian, None, None, None, None
