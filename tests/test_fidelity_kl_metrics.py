"""Trainer fidelity (issue 11, items 3 and 6): the KL estimate that runs is `losses.kto_kl` (the tested
function), evaluation computes a real KL, KL rows keep `data.max_length`, and `loss/<kind>` is in
the step loss's unit.

Each check is recomputed here one row at a time on a 2-layer, 16-wide Llama whose adapter is first
fitted to the rows' tokens (a fresh adapter's policy equals its reference: every log-ratio 0). Modules
are imported whole and their functions looked up in each test, so on the code before the change each
test fails on its own missing piece, not on an import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from uft_train import kl as kl_module
from uft_train import losses
from uft_train import train as train_module
from uft_train.batching import GlobalBatch, Unit, make_units
from uft_train.config import Recipe, recipe_from_mapping
from uft_train.data import Example
from uft_train.logps import from_masks, sequence_logps
from uft_train.model import add_adapter, reference
from uft_train.objective import Terms
from uft_train.schedule import make_optimizer, make_scheduler
from uft_train.stats import StepStats
from uft_train.step import Run

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

MAX_LENGTH, MAX_PROMPT = 16, 8
VOCAB = 48


def _recipe(loss: str, kinds: list[str]) -> Recipe:
    return recipe_from_mapping({
        "model": {"name": "tiny"}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
        "data": {"path": "x", "max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT, "kinds": kinds},
        "loss": {"name": loss, "beta": 0.5},
        "train": {"batch_size": 4, "micro_batch_size": 2, "device": "cpu", "seed": 7},
    }, "test recipe")


def _example(row: int, prompt: int, completion: int, *, kind: str = "binary", label: bool | None = True) -> Example:
    """Token ids 1..8 drawn from a generator seeded by the row: rows differ, the test repeats, and
    an adapter fitted to some rows raises every row's completion log-prob (`_fit_adapter`)."""
    ids = torch.randint(1, 9, (prompt + completion,), generator=torch.Generator().manual_seed(row)).tolist()
    return Example(row, kind, 1.0, label, None, "g", tuple(ids), prompt, f"id{row}", "s")


def _run(loss: str, kinds: list[str], train: list[Example], test: list[Example]) -> Run:
    recipe = _recipe(loss, kinds)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = add_adapter(LlamaForCausalLM(config), recipe, implicit_reward=loss != "sft")
    _fit_adapter(model, train + test)
    optimizer = make_optimizer(model, recipe.optim)
    return Run(recipe, model, optimizer, make_scheduler(optimizer, recipe.optim, 1), train, test,
               make_units(train, pairs_as_one_term=False), 0, torch.device("cpu"))


def _fit_adapter(model: torch.nn.Module, rows: Sequence[Example]) -> None:
    """Ten steps of next-token training on the rows: the policy moves off its reference (a fresh
    adapter's log-ratios are all 0) towards tokens 1..8, so mismatched rows get a positive mean
    log-ratio, a KL that the clamp does not hide."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    for _ in range(10):
        for example in rows:
            ids = torch.tensor([list(example.input_ids)])
            loss = -sequence_logps(model, from_masks(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool))).sum()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _logps(model: torch.nn.Module, ids: Sequence[int], prompt_len: int) -> tuple[float, float]:
    """(policy, reference) log-prob of one row's completion, alone in its batch (no padding)."""
    input_ids = torch.tensor([list(ids)])
    loss_mask = torch.arange(len(ids))[None] >= prompt_len
    with torch.no_grad():
        policy = sequence_logps(model, from_masks(input_ids, torch.ones_like(input_ids), loss_mask))
        with reference(model):
            ref = sequence_logps(model, from_masks(input_ids, torch.ones_like(input_ids), loss_mask))
    return float(policy), float(ref)


def _mismatched_log_ratios(model: torch.nn.Module, rows: Sequence[Example], partners: Sequence[int]) -> list[float]:
    """Each row's prompt with its partner's completion, cut by hand to MAX_LENGTH, one row at a time."""
    ratios = []
    for i, j in enumerate(partners):
        prompt, completion = rows[i], rows[j]
        ids = (prompt.input_ids[:prompt.prompt_len] + completion.input_ids[completion.prompt_len:])[:MAX_LENGTH]
        policy, ref = _logps(model, ids, prompt.prompt_len)
        ratios.append(policy - ref)
    return ratios


def _lengths_seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The lengths of the rows `uft_train.kl` sends to the model."""
    seen: list[int] = []
    forward = kl_module.forward

    def spy(run: Run, examples: Sequence[Example], **kwargs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        seen.extend(len(e.input_ids) for e in examples)
        return forward(run, examples, **kwargs)

    monkeypatch.setattr(kl_module, "forward", spy)
    return seen


# Every row fits max_length 16 (prompts of at most max_prompt_length 8), but row 4's completion of 10
# tokens fits only its own 6-token prompt: whichever row borrows it (prompt 7 or 8) must be cut.
TEST_SHAPES = [(7, 3), (8, 4), (8, 8), (7, 2), (6, 10)]


def test_evaluation_kl_is_the_clamped_mean_over_a_seeded_derangement_of_the_test_split(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """eval/kto_kl = max(0, mean over the test split of logp(y_j|x_i) - logp_ref(y_j|x_i)), partners
    the derangement seeded by train.seed, each KL row cut to data.max_length; the same at every
    evaluation; and eval/loss is KTO's loss with that kl (before: kl = 0 and no eval/kto_kl)."""
    test = [_example(i, p, c, label=i % 2 == 0) for i, (p, c) in enumerate(TEST_SHAPES)]
    run = _run("kto", ["sft", "binary", "pairwise"], test[:4], test)
    run.model.eval()
    partners = kl_module.derangement(len(test), seed=7)
    ratios = _mismatched_log_ratios(run.model, test, partners)
    expected_kl = max(0.0, sum(ratios) / len(ratios))
    assert expected_kl > 0.5  # 0.693: well away from the clamp and from the old constant 0
    cut = [i for i, j in enumerate(partners) if test[i].prompt_len + test[j].completion_len > MAX_LENGTH]
    assert cut  # at least one KL row is over max_length before its cut

    seen = _lengths_seen(monkeypatch)
    metrics, _ = train_module.evaluate(run)
    assert metrics["eval/kto_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert len(seen) == len(test) and max(seen) <= MAX_LENGTH
    assert train_module.evaluate(run)[0]["eval/kto_kl"] == metrics["eval/kto_kl"]  # comparable evaluations

    # KTO by hand: desirable rows sigmoid(beta (kl - r)), undesirable rows sigmoid(beta (r - kl)).
    terms = []
    for example in test:
        policy, ref = _logps(run.model, example.input_ids, example.prompt_len)
        sign = 1 if example.label else -1
        terms.append(1 / (1 + math.exp(-0.5 * sign * (expected_kl - (policy - ref)))))
    assert metrics["eval/loss"] == pytest.approx(sum(terms) / len(terms), rel=1e-5)


# Row 0's completion of 9 tokens goes, in step 3's derangement, to row 3's 8-token prompt: 17 > 16.
TRAIN_SHAPES = [(7, 9), (8, 3), (6, 4), (8, 5)]
STEP = 3


def _kto_step() -> tuple[Run, GlobalBatch, list[Example], list[int]]:
    """A KTO run on 4 train rows, its one global batch (2 micro-batches of 2) and step 3's partners."""
    train = [_example(10 + i, p, c, label=i % 2 == 0) for i, (p, c) in enumerate(TRAIN_SHAPES)]
    run = _run("kto", ["sft", "binary", "pairwise"], train, [])
    run.model.train()
    return run, GlobalBatch(tuple(Unit((i,), 1) for i in range(4))), train, kl_module.derangement(4, seed=7 * 1_000_003 + STEP)


def test_train_kl_rows_keep_max_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each KL row of a step is its prompt with the partner's completion cut to data.max_length:
    lengths min(16, prompt_i + completion_j), one of them cut from 17 (before: 17 was sent)."""
    run, batch, train, partners = _kto_step()
    full = [train[i].prompt_len + train[j].completion_len for i, j in enumerate(partners)]
    assert max(full) > MAX_LENGTH
    seen = _lengths_seen(monkeypatch)
    train_module.train_step(run, batch, STEP)
    assert sorted(seen) == sorted(min(MAX_LENGTH, n) for n in full)


def test_train_kl_is_losses_kto_kl_of_the_gathered_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's KL over 2 micro-batches of 2: the loop hands losses.kto_kl (once) the float64 sum of
    the 4 mismatched log-ratios, recomputed here row by row, and the count 4 (gathered, not a mean of
    means), and logs kto_kl = max(0, sum / 4)."""
    run, batch, train, partners = _kto_step()
    ratios = _mismatched_log_ratios(run.model, train, partners)  # before the step moves the adapter
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    kto_kl = losses.kto_kl

    def spy(log_ratio_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        calls.append((log_ratio_sum, count))
        return kto_kl(log_ratio_sum, count)

    monkeypatch.setattr(losses, "kto_kl", spy)
    metrics = train_module.train_step(run, batch, STEP)

    assert len(calls) == 1
    total, count = calls[0]
    assert total.dtype == torch.float64 and float(count) == 4
    assert float(total) == pytest.approx(sum(ratios), rel=1e-5, abs=1e-6)
    assert sum(ratios) / 4 > 0.5  # 0.579: the logged value is not the clamp's 0
    assert metrics["kto_kl"] == pytest.approx(max(0.0, sum(ratios) / 4), rel=1e-5, abs=1e-7)
    assert metrics["kto_kl"] == float(kto_kl(total, count))


def test_per_kind_losses_are_in_the_step_loss_unit_and_loss_is_their_weighted_mean() -> None:
    """Terms 6, 10 (sft rows of 3 and 5 completion tokens) and 3 (a binary row of 2 tokens).
    Denominator tokens: loss/sft = 16 / 8 = 2.0, loss/binary = 3 / 2 = 1.5, and the step loss
    19 / 10 = 1.9 = (8 x 2.0 + 2 x 1.5) / 10. Denominator terms: loss/sft = 16 / 2 = 8.0,
    loss/binary = 3.0, step loss 19 / 3 = (2 x 8.0 + 1 x 3.0) / 3."""
    rows = [_example(0, 2, 3, kind="sft", label=None), _example(1, 2, 5, kind="sft", label=None), _example(2, 4, 2)]
    stats = StepStats()
    stats.add(Terms(torch.tensor([6.0, 10.0, 3.0]), ("sft", "sft", "binary"), None, ()), rows, padded=0)
    assert stats.by_kind("tokens") == {"loss/sft": 2.0, "loss/binary": 1.5}
    assert stats.loss_sum / stats.tokens_completion == pytest.approx((8 * 2.0 + 2 * 1.5) / 10) == 1.9
    assert stats.by_kind("terms") == {"loss/sft": 8.0, "loss/binary": 3.0}
    assert stats.loss_sum / 3 == pytest.approx((2 * 8.0 + 1 * 3.0) / 3)


def test_sft_step_logs_loss_sft_per_completion_token() -> None:
    """An sft step of 4 rows (completions of 3, 5, 2, 6 tokens) in 2 micro-batches: loss and
    loss/sft are both the summed NLL over the 16 completion tokens, recomputed row by row (before:
    loss/sft was the NLL per row, 16 / 4 = 4 times larger here)."""
    train = [_example(20 + i, 4, c, kind="sft", label=None) for i, c in enumerate([3, 5, 2, 6])]
    run = _run("sft", ["sft"], train, [])
    run.model.train()
    nll = -sum(_logps(run.model, e.input_ids, e.prompt_len)[0] for e in train)
    metrics = train_module.train_step(run, GlobalBatch(tuple(Unit((i,), 1) for i in range(4))), 1)
    assert metrics["loss"] == pytest.approx(nll / 16, rel=1e-5)
    assert metrics["loss/sft"] == pytest.approx(metrics["loss"], rel=1e-6)  # float32 sums in another order
