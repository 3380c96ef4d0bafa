"""Evaluation against the world's ground truth: instruction accuracy and reward on held-out
questions, retention of the base model's knowledge (perplexity, fact recall), and KL from the base
along the model's answers (`kl`) and along held-out pretraining text (`kl_pretrain`).

Each metric is a small function over a `LanguageModel` (see `lm.py`), so tests check it with
oracles; `evaluate` wires them to Hugging Face models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from uft_miniature.grammar import KINDS, Question
from uft_miniature.lm import HFModel, LanguageModel, as_language_model
from uft_miniature.pretrain import terminated
from uft_miniature.reward import extract_answer, reward
from uft_train.tokenizer import END_OF_TURN

# A pretraining document starts after the previous one's `<|end|>` (see pretrain.py), so texts
# in the pretraining format are scored and continued after one.
DOCUMENT_START = END_OF_TURN


@dataclass(frozen=True)
class EvalSet:
    questions: tuple[Question, ...]
    """Held-out questions (never asked in training data; their facts are in the pretraining corpus)."""
    heldout_texts: tuple[str, ...]
    """Held-out pretraining-format texts, for perplexity."""
    probes: tuple[tuple[str, str], ...]
    """(prefix, expected first word) in the pretraining format, for fact recall."""


def _records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_questions(folder: Path, name: str) -> tuple[Question, ...]:
    """The questions `sources.write_world` wrote to `folder/<name>_questions.jsonl` (name: eval, selection)."""
    return tuple(Question(**r) for r in _records(Path(folder) / f"{name}_questions.jsonl"))


def load_eval_set(folder: Path) -> EvalSet:
    """The eval set `sources.write_world` wrote into `folder`."""
    return EvalSet(load_questions(folder, "eval"),
                   tuple(r["text"] for r in _records(Path(folder) / "pretrain_heldout.jsonl")),
                   tuple((r["prefix"], r["expected"]) for r in _records(Path(folder) / "fact_probes.jsonl")))


def chat_prompts(tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question]) -> list[str]:
    """Each question as a one-turn chat, rendered with the tokenizer's template and generation prompt."""
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q.prompt}], tokenize=False,
                                             add_generation_prompt=True) for q in questions]
    assert all(isinstance(p, str) for p in prompts)  # tokenize=False renders text
    return [str(p) for p in prompts]


def answer_metrics(questions: Sequence[Question], responses: Sequence[str]) -> dict[str, float]:
    """accuracy (extracted answer == truth), mean reward, and accuracy per kind present."""
    correct = [extract_answer(q, r) == q.answer for q, r in zip(questions, responses, strict=True)]
    metrics = {"accuracy": sum(correct) / len(correct),
               "reward": math.fsum(reward(q, r) for q, r in zip(questions, responses)) / len(questions)}
    for kind in KINDS:
        hits = [c for q, c in zip(questions, correct) if q.kind == kind]
        if hits:
            metrics[f"accuracy_{kind}"] = sum(hits) / len(hits)
    return metrics


def fact_recall(lm: LanguageModel, probes: Sequence[tuple[str, str]], max_new_tokens: int = 6) -> float:
    """Share of probes whose greedy continuation's first word (trailing `.` dropped) is the expected one."""
    continuations = lm.generate([DOCUMENT_START + prefix for prefix, _ in probes], max_new_tokens)
    hits = [(c.split() or [""])[0].rstrip(".") == expected for c, (_, expected) in zip(continuations, probes)]
    return sum(hits) / len(hits)


def document_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Each text as a pretraining document after the previous one's end: `<|end|>` text `<|end|>`
    (the first token is context only; `pretrain.terminated` says where the document ends)."""
    return [tokenizer(DOCUMENT_START + terminated(t), add_special_tokens=False)["input_ids"] for t in texts]


def perplexity(lm: LanguageModel, sequences: Sequence[Sequence[int]]) -> float:
    """exp(mean NLL) over every token but each sequence's first, token-weighted across sequences."""
    nll, count = 0.0, 0
    for ids, logps in zip(sequences, lm.logprobs(sequences)):
        targets = torch.tensor(list(ids[1:]))
        nll -= float(logps.gather(-1, targets.unsqueeze(-1)).double().sum())
        count += len(targets)
    return math.exp(nll / count)


def response_ids(tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question],
                 responses: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Prompt+response rendered and tokenized as the trainer does; and where each response starts."""
    sequences, starts = [], []
    for question, response in zip(questions, responses, strict=True):
        prompt = [{"role": "user", "content": question.prompt}]
        whole = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
        head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        sequences.append(tokenizer(whole, add_special_tokens=False)["input_ids"])
        starts.append(len(tokenizer(head, add_special_tokens=False)["input_ids"]))
    return sequences, starts


def kl_to_base(policy: LanguageModel, base: LanguageModel, sequences: Sequence[Sequence[int]],
               starts: Sequence[int]) -> float:
    """Mean per-token KL(policy || base) over the response positions of `sequences` (starts of 1:
    every position that predicts a token, as for pretraining-format text).

    Estimator: at every response token t (from `starts[i]` to the end, the template's `<|end|>`
    included), the exact KL of the two next-token distributions given the same prefix,
    sum_v p(v) (log p(v) - log q(v)); averaged over all response tokens of all sequences. The
    sequences are the policy's own greedy responses, so this is the divergence along the text the
    policy actually produces (not a sampled Monte-Carlo estimate; identical models give exactly 0).
    """
    total, count = 0.0, 0
    for p_rows, q_rows, start in zip(policy.logprobs(sequences), base.logprobs(sequences), starts):
        p, q = p_rows[start - 1:].double(), q_rows[start - 1:].double()  # row i predicts token i + 1
        total += float((p.exp() * (p - q)).sum())
        count += p.shape[0]
    return total / count


def respond(lm: LanguageModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question],
            max_new_tokens: int) -> list[str]:
    """The model's greedy responses to the questions as one-turn chats."""
    return lm.generate(chat_prompts(tokenizer, questions), max_new_tokens)


def _answer(lm: LanguageModel, tokenizer: PreTrainedTokenizerBase, questions: Sequence[Question],
            max_new_tokens: int) -> tuple[list[str], dict[str, float]]:
    """The responses (`evaluate` measures KL along them) and their `answer_metrics`."""
    responses = respond(lm, tokenizer, questions, max_new_tokens)
    return responses, answer_metrics(questions, responses)


def answer_quality(model: HFModel | LanguageModel, tokenizer: PreTrainedTokenizerBase,
                   questions: Sequence[Question], *, batch_size: int = 64,
                   max_new_tokens: int = 24) -> dict[str, float]:
    """accuracy (+ per kind) and reward on `questions`: what choosing among trained models on the
    selection questions needs, without `evaluate`'s perplexity, recall and KL passes."""
    return _answer(as_language_model(model, tokenizer, batch_size), tokenizer, questions, max_new_tokens)[1]


def evaluate(model: HFModel | LanguageModel, tokenizer: PreTrainedTokenizerBase,
             base_model: HFModel | LanguageModel | None, eval_set: EvalSet, *,
             batch_size: int = 64, max_new_tokens: int = 24) -> dict[str, float]:
    """accuracy (+ per kind), reward, perplexity, fact_recall, and (when `base_model` is given) kl
    along the model's answers and kl_pretrain along the held-out pretraining texts.

    Two KLs because they measure different drifts: `kl` how far the answers moved from what the
    base would say (large for any fine-tune), `kl_pretrain` how much the model forgot of the base's
    language model on text it was pretrained like.
    `model`/`base_model`: Hugging Face causal LMs (peft models too) or `LanguageModel`s.
    """
    lm = as_language_model(model, tokenizer, batch_size)
    questions = list(eval_set.questions)
    responses, metrics = _answer(lm, tokenizer, questions, max_new_tokens)
    documents = document_ids(tokenizer, eval_set.heldout_texts)
    metrics["perplexity"] = perplexity(lm, documents)
    metrics["fact_recall"] = fact_recall(lm, eval_set.probes)
    if base_model is not None:
        base = as_language_model(base_model, tokenizer, batch_size)
        metrics["kl"] = kl_to_base(lm, base, *response_ids(tokenizer, questions, responses))
        metrics["kl_pretrain"] = kl_to_base(lm, base, documents, [1] * len(documents))
    return metrics
