"""What the evaluation needs from a language model, and its adapter for a Hugging Face causal LM.

The evaluation talks to a `LanguageModel`: greedy text continuations and next-token log-probs.
Tests pass oracles (a lookup of true answers, a uniform distribution) through the same protocol,
so the metrics are checked against hand computations without training anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uft_train.tokenizer import END_OF_TURN

HFModel = PreTrainedModel | PeftModel  # a causal LM, or a peft model over one


class LanguageModel(Protocol):
    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuation of each prompt text (special tokens written as text, e.g. `<|user|>`),
        stopped at the end-of-turn or end-of-text token, decoded without special tokens."""
        ...

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Per token-id sequence, a float32 [len - 1, V] log-softmax: row i is the distribution of token i + 1."""
        ...


class HFLanguageModel:
    """A `PreTrainedModel` (or a peft model over one) as a `LanguageModel`, in batches.

    Generation is `model.generate(do_sample=False)` with a KV cache over left-padded batches, stopping
    at `<|end|>` or the eos token. Prompts are processed in order of length (fewer pad tokens),
    results returned in the caller's order; the same inputs give the same batches, hence the same
    numbers on CPU.
    """

    def __init__(self, model: HFModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64) -> None:
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.stop_ids = [tokenizer.eos_token_id] + ([end] if end not in (None, tokenizer.unk_token_id) else [])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out: list[str] = [""] * len(prompts)
        for batch in self._batches([len(e) for e in encoded]):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # left padding: every prompt ends at the last column
                ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]):] = 1
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            generated = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
            )[:, width:]
            for row, i in enumerate(batch):
                text = self.tokenizer.decode(generated[row], skip_special_tokens=True)
                assert isinstance(text, str)  # one sequence decodes to one text
                out[i] = text
        return out

    @torch.inference_mode()
    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [torch.empty(0)] * len(sequences)
        for batch in self._batches([len(s) for s in sequences]):
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # right padding: positions match the unpadded sequence
                ids[row, :len(sequences[i])] = torch.tensor(list(sequences[i]))
                mask[row, :len(sequences[i])] = 1
            logits = self.model(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device)).logits
            logps = torch.log_softmax(logits.float(), dim=-1).cpu()
            for row, i in enumerate(batch):
                out[i] = logps[row, :len(sequences[i]) - 1]
        return out


def as_language_model(model: HFModel | LanguageModel, tokenizer: PreTrainedTokenizerBase,
                      batch_size: int) -> LanguageModel:
    """`model` itself if it already speaks the protocol, else the Hugging Face adapter around it."""
    if isinstance(model, (PreTrainedModel, PeftModel)):
        return HFLanguageModel(model, tokenizer, batch_size)
    return model
