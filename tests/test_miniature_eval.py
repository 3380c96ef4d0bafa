"""The evaluation against ground truth, checked with oracle models and hand computations."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from uft_miniature.evaluate import (
    EvalSet,
    answer_quality,
    chat_prompts,
    evaluate,
    fact_recall,
    kl_to_base,
    load_eval_set,
    load_questions,
)
from uft_miniature.grammar import Question
from uft_miniature.lm import HFLanguageModel
from uft_miniature.sources import write_world
from uft_miniature.world import WorldConfig, build_world
from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import END_OF_TURN, build_tokenizer

QUESTIONS = (Question("Bramo lives in which city?", "Tesk", "city", "Bramo"),
             Question("17 plus 25 is what?", "42", "plus", "17 plus 25"),
             Question("Mela is how old?", "61", "age", "Mela"))
TEXTS = ("Bramo lives in Tesk. Bramo is 34 years old.", "17 plus 25 is 42.")
PROBES = (("Bramo lives in", "Tesk"), ("17 plus 25 is", "42"))
EVAL_SET = EvalSet(QUESTIONS, TEXTS, PROBES)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_tokenizer([*TEXTS, *(q.prompt for q in QUESTIONS)] * 3, vocab_size=300)


class TableModel:
    """Answers from a table of prompt text -> continuation; a uniform next-token distribution."""

    def __init__(self, answers: dict[str, str], vocab_size: int) -> None:
        self.answers, self.vocab_size = answers, vocab_size

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        return [self.answers.get(p, "") for p in prompts]

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return [torch.full((len(s) - 1, self.vocab_size), -math.log(self.vocab_size)) for s in sequences]


def test_oracle_is_perfect_and_uniform_perplexity_is_the_vocabulary(tokenizer: PreTrainedTokenizerBase) -> None:
    """accuracy 1, reward of the good form (1.0), recall 1; a uniform model's perplexity is exp(log V) = V."""
    answers = dict(zip(chat_prompts(tokenizer, QUESTIONS), (q.good_response for q in QUESTIONS)))
    answers.update({END_OF_TURN + "Bramo lives in": " Tesk. Bramo is", END_OF_TURN + "17 plus 25 is": " 42."})
    oracle = TableModel(answers, len(tokenizer))
    metrics = evaluate(oracle, tokenizer, None, EVAL_SET)
    assert metrics["accuracy"] == metrics["accuracy_city"] == metrics["accuracy_plus"] == 1.0
    assert metrics["reward"] == 1.0 and metrics["fact_recall"] == 1.0
    assert metrics["perplexity"] == pytest.approx(len(tokenizer), rel=1e-6)
    assert "kl" not in metrics


def test_answer_quality_is_evaluate_without_the_text_metrics(tokenizer: PreTrainedTokenizerBase) -> None:
    """The oracle: accuracy 1 on every kind asked, reward 1; the same numbers as `evaluate`'s, and no others."""
    oracle = TableModel(dict(zip(chat_prompts(tokenizer, QUESTIONS), (q.good_response for q in QUESTIONS))),
                        len(tokenizer))
    quality = answer_quality(oracle, tokenizer, QUESTIONS)
    assert quality == {"accuracy": 1.0, "reward": 1.0, "accuracy_city": 1.0, "accuracy_age": 1.0, "accuracy_plus": 1.0}
    full = evaluate(oracle, tokenizer, None, EVAL_SET)
    assert quality == {k: full[k] for k in quality}


class DocumentSkewed(TableModel):
    """Uniform on chats; on pretraining-format sequences (they start with `<|end|>`), probability 1/2
    on token 0 and 1/(2(V - 1)) on each other token, at every position."""

    def __init__(self, end_id: int, vocab_size: int) -> None:
        super().__init__({}, vocab_size)
        self.end_id = end_id

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        skewed = torch.full((self.vocab_size,), 1 / (2 * (self.vocab_size - 1)), dtype=torch.float64)
        skewed[0] = 0.5
        rows = super().logprobs(sequences)
        return [skewed.log().float().expand_as(r) if s[0] == self.end_id else r for s, r in zip(sequences, rows)]


def test_kl_pretrain_hand_computed(tokenizer: PreTrainedTokenizerBase) -> None:
    """Policy uniform u = 1/V; the base q is skewed on pretraining text only, so kl (along chat answers)
    is 0 and kl_pretrain, the same at every position, is
    sum_v u (ln u - ln q_v) = -ln V + 1/V ln 2 + (V - 1)/V ln(2 (V - 1)) = ln 2 - ln V + (V - 1)/V ln(V - 1)."""
    vocab = len(tokenizer)
    policy = TableModel(dict(zip(chat_prompts(tokenizer, QUESTIONS), (q.good_response for q in QUESTIONS))), vocab)
    base = DocumentSkewed(tokenizer.convert_tokens_to_ids(END_OF_TURN), vocab)
    metrics = evaluate(policy, tokenizer, base, EVAL_SET)
    assert metrics["kl"] == 0.0
    expected = math.log(2) - math.log(vocab) + (vocab - 1) / vocab * math.log(vocab - 1)
    assert metrics["kl_pretrain"] == pytest.approx(expected, rel=1e-5)
    assert evaluate(policy, tokenizer, policy, EVAL_SET)["kl_pretrain"] == 0.0


def test_wrong_model_scores_zero_accuracy(tokenizer: PreTrainedTokenizerBase) -> None:
    """Every answer in the good form with a wrong value: accuracy 0, reward (0.65*1 + 0.45*4)/7.6 each."""
    wrong = ["Bramo lives in Vorlan.", "17 plus 25 is 43.", "Mela is 60 years old."]
    model = TableModel(dict(zip(chat_prompts(tokenizer, QUESTIONS), wrong)), len(tokenizer))
    metrics = evaluate(model, tokenizer, None, EVAL_SET)
    assert metrics["accuracy"] == 0.0
    assert metrics["reward"] == pytest.approx(2.45 / 7.6, abs=1e-12)
    assert metrics["fact_recall"] == 0.0  # no continuation at all


def test_fact_recall_reads_the_first_word() -> None:
    model = TableModel({END_OF_TURN + "Bramo lives in": " Teskar.", END_OF_TURN + "17 plus 25 is": " 42 and"}, 10)
    assert fact_recall(model, PROBES) == 0.5


def test_kl_hand_computed() -> None:
    """p = (1/2, 1/2), q = (1/4, 3/4) at every position: KL = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
    Response positions: from start - 1 on, so 2 of a 4-token sequence and 1 of a 3-token one."""
    class Fixed:
        def __init__(self, probs: list[float]) -> None:
            self.row = torch.tensor(probs).log()

        def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
            return [self.row.expand(len(s) - 1, 2) for s in sequences]

    kl = kl_to_base(Fixed([0.5, 0.5]), Fixed([0.25, 0.75]), [[0, 1, 1, 0], [1, 0, 1]], [2, 2])
    assert kl == pytest.approx(0.5 * math.log(4 / 3), abs=1e-7)
    assert kl_to_base(Fixed([0.5, 0.5]), Fixed([0.5, 0.5]), [[0, 1, 1, 0]], [2]) == 0.0


def test_hf_model_against_itself_has_zero_kl(tokenizer: PreTrainedTokenizerBase) -> None:
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    metrics = evaluate(model, tokenizer, model, EVAL_SET, batch_size=2, max_new_tokens=5)
    assert metrics["kl"] == metrics["kl_pretrain"] == 0.0
    assert 1.0 < metrics["perplexity"] < 2 * len(tokenizer)  # an untrained model: about uniform


def test_batched_generation_matches_one_at_a_time(tokenizer: PreTrainedTokenizerBase) -> None:
    """Left padding must not change a greedy continuation; right padding must not change log-probs."""
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seed=3)
    prompts = chat_prompts(tokenizer, QUESTIONS) + [END_OF_TURN + "Bramo"]
    batched = HFLanguageModel(model, tokenizer, batch_size=4)
    single = HFLanguageModel(model, tokenizer, batch_size=1)
    assert batched.generate(prompts, 6) == single.generate(prompts, 6)
    sequences = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    for a, b in zip(batched.logprobs(sequences), single.logprobs(sequences)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_generation_stops_at_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> None:
    """A head that always emits one token: `<|end|>` stops at once; a word repeats max_new_tokens times."""
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    model.lm_head = torch.nn.Linear(32, len(tokenizer), bias=True)
    torch.nn.init.zeros_(model.lm_head.weight)
    lm = HFLanguageModel(model, tokenizer, batch_size=2)
    word = tokenizer("Tesk", add_special_tokens=False)["input_ids"][0]
    for token, expected in ((tokenizer.convert_tokens_to_ids(END_OF_TURN), ""), (word, tokenizer.decode([word]) * 3)):
        with torch.no_grad():
            model.lm_head.bias.zero_()
            model.lm_head.bias[token] = 10.0
        assert lm.generate(["<|user|>Hi<|end|><|assistant|>"], 3) == [expected]


def test_load_eval_set(tmp_path: Path) -> None:
    world = build_world(WorldConfig(entities=40, max_operand=6))
    write_world(world, tmp_path, conversations=5, eval_size=12, probes=7)
    loaded = load_eval_set(tmp_path)
    assert len(loaded.questions) == 12 and len(loaded.probes) == 7 and loaded.heldout_texts
    assert loaded.questions[0] == world.pools["eval"][0]
    assert load_questions(tmp_path, "selection") == world.pools["selection"]
