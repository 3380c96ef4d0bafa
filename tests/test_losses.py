"""Losses against hand computations (each written out in the test's docstring), their edge cases,
gradients (policy only), numerical stability, dtypes, and the loss table (`uft_train.loss_table`)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from uft_train.config import LossConfig
from uft_train.loss_table import LOSSES, get_loss, pair_loss, pairs_as_one_term, row_loss
from uft_train.losses import (
    dpo,
    implicit_reward,
    kto,
    kto_kl,
    sft,
    una_bce,
    una_mse,
)
from uft_train.objective import PAIR_INPUTS, ROW_INPUTS

LOG2 = math.log(2)
# Hand values carry 6 decimals: compare to within their rounding, not float32's epsilon.
HAND = {"rtol": 0.0, "atol": 1e-6}


def t(*values: float, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


# ---- hand computations -------------------------------------------------------------------------


def test_implicit_reward() -> None:
    """r = beta * (policy - ref), beta = 0.1:
    0.1 * (-3.0 - (-5.0)) = 0.2;  0.1 * (-6.0 - (-4.0)) = -0.2;  0.1 * (-2.0 - (-2.0)) = 0."""
    assert_close(implicit_reward(t(-3.0, -6.0, -2.0), t(-5.0, -4.0, -2.0), beta=0.1), t(0.2, -0.2, 0.0))


def test_una_mse_by_hand() -> None:
    """beta = 0.1, (sigmoid(r) - score)^2:
    r = 0.1 * (-3.0 - (-5.0)) = 0.2,  sigmoid(0.2) = 0.549834, score 1.0:  (0.549834 - 1)^2    = 0.202649
    r = 0.1 * (-6.0 - (-4.0)) = -0.2, sigmoid(-0.2) = 0.450166, score 0.25: (0.450166 - 0.25)^2 = 0.040066
    r = 0.1 * (-2.0 - (-2.0)) = 0,    sigmoid(0) = 0.5,         score 0.0:  (0.5 - 0)^2         = 0.25"""
    loss = una_mse(t(-3.0, -6.0, -2.0), t(-5.0, -4.0, -2.0), t(1.0, 0.25, 0.0), beta=0.1)
    assert_close(loss, t(0.202649, 0.040066, 0.25), **HAND)


def test_una_bce_by_hand() -> None:
    """beta = 0.1, -[score * logsigmoid(r) + (1 - score) * logsigmoid(-r)], with -logsigmoid(0.2) = 0.598139 and
    -logsigmoid(-0.2) = 0.798139:
    r = 0.2,  score 1.0:  1.0 * 0.598139                     = 0.598139
    r = -0.2, score 0.25: 0.25 * 0.798139 + 0.75 * 0.598139  = 0.199535 + 0.448604 = 0.648139
    r = 0,    score 0.0:  -logsigmoid(0) = log 2             = 0.693147 (any score: both terms are log 2)"""
    loss = una_bce(t(-3.0, -6.0, -2.0), t(-5.0, -4.0, -2.0), t(1.0, 0.25, 0.0), beta=0.1)
    assert_close(loss, t(0.598139, 0.648139, 0.693147), **HAND)


def test_dpo_by_hand() -> None:
    """beta = 0.1, -logsigmoid(beta * ((pc - rc) - (pr - rr))):
    pc -10, pr -12, rc -11, rr -11: 0.1 * ((-10 + 11) - (-12 + 11)) = 0.1 * (1 + 1)  = 0.2  -> 0.598139
    pc -8,  pr -6,  rc -7,  rr -7:  0.1 * ((-8 + 7) - (-6 + 7))     = 0.1 * (-1 - 1) = -0.2 -> 0.798139
    pc -9,  pr -4,  rc -9,  rr -4:  policy = reference, margin 0                           -> log 2 = 0.693147"""
    loss = dpo(t(-10.0, -8.0, -9.0), t(-12.0, -6.0, -4.0), t(-11.0, -7.0, -9.0), t(-11.0, -7.0, -4.0), beta=0.1)
    assert_close(loss, t(0.598139, 0.798139, 0.693147), **HAND)


def test_kto_by_hand() -> None:
    """beta = 0.1, kl = 0.5, w_d = 1.0, w_u = 1.5, lr = policy - ref:
    desirable,   lr = -3 + 5 = 2:  1.0 * (1 - sigmoid(0.1 * (2 - 0.5)))  = 1 - sigmoid(0.15)         = 1 - 0.537430 = 0.462570
    undesirable, lr = 2:           1.5 * (1 - sigmoid(0.1 * (0.5 - 2)))  = 1.5 * (1 - 0.462570)     = 0.806145
    undesirable, lr = -6 + 4 = -2: 1.5 * (1 - sigmoid(0.1 * (0.5 + 2)))  = 1.5 * (1 - 0.562177)     = 0.656735"""
    loss = kto(t(-3.0, -3.0, -6.0), t(-5.0, -5.0, -4.0), torch.tensor([True, False, False]), torch.tensor(0.5),
               beta=0.1, desirable_weight=1.0, undesirable_weight=1.5)
    assert_close(loss, t(0.462570, 0.806145, 0.656735), **HAND)


def test_kto_kl_by_hand() -> None:
    """max(0, sum / count) of the step's gathered log-ratios:
    (1.0 - 0.5) + (-0.5 - 0.5) + (2.0 - 0.5) = 1.0 over 3 rows = 0.333333 (the -1.0 is not clamped alone);
    (-1.0 - 0.5) + (0.0 - 0.5) = -2.0 over 2 rows = -1.0, clamped to 0; two ranks' sums (0.5, 1 row) and
    (0.5, 2 rows) give 1.0 / 3, not the mean of their means (0.5 and 0.25)."""
    assert_close(kto_kl(torch.tensor(1.0), torch.tensor(3)), torch.tensor(1 / 3))
    assert_close(kto_kl(torch.tensor(-2.0), torch.tensor(2)), torch.tensor(0.0))
    assert_close(kto_kl(torch.tensor(0.5) + torch.tensor(0.5), torch.tensor(1) + torch.tensor(2)), torch.tensor(1 / 3))
    assert kto_kl(torch.tensor(1.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)).dtype == torch.float64
    assert kto_kl(torch.tensor(1.0), torch.tensor(3)).shape == ()
    assert_close(kto_kl(torch.tensor(1.5), 2), torch.tensor(0.75))  # a plain int count: 1.5 / 2
    assert_close(kto_kl(torch.tensor(-1e-3), 4), torch.tensor(0.0))  # slightly negative: still 0


def test_sft_is_summed_nll() -> None:
    """-policy_logps, not divided by n_tokens (the loop divides by the step's tokens):
    -(-3.0) = 3.0 over 2 tokens; -(-12.5) = 12.5 over 5 tokens."""
    assert_close(sft(t(-3.0, -12.5), torch.tensor([2, 5])), t(3.0, 12.5))
    assert LOSSES["sft"].denominator == "tokens"


# ---- edge cases ----------------------------------------------------------------------------------


def test_zero_reward_gives_sigmoid_half() -> None:
    """policy = ref -> r = 0, sigmoid 0.5: una_mse (0.5 - s)^2 = 0.25, 0, 0.25 for s = 0, 0.5, 1."""
    same = t(-4.0, -4.0, -4.0)
    assert_close(una_mse(same, same, t(0.0, 0.5, 1.0), beta=0.03), t(0.25, 0.0, 0.25))


@pytest.mark.parametrize("target", [0.0, 1.0])
def test_una_bce_on_binary_targets_is_the_logistic_loss(target: float) -> None:
    """For 0/1 targets una_bce is -logsigmoid(r) (target 1) or -logsigmoid(-r) (target 0), the papers'
    binary loss, and equals torch's binary_cross_entropy_with_logits."""
    policy, ref = t(-3.0, -6.0, -1.0, -20.0), t(-5.0, -4.0, -1.5, -2.0)
    scores = torch.full((4,), target)
    reward = 0.1 * (policy - ref)
    loss = una_bce(policy, ref, scores, beta=0.1)
    assert_close(loss, -F.logsigmoid(reward if target else -reward))
    assert_close(loss, F.binary_cross_entropy_with_logits(reward, scores, reduction="none"))


def test_una_bce_on_fractional_scores_is_soft_cross_entropy() -> None:
    """Our extension: with a fractional score the loss is the cross-entropy against a soft label, which
    BCE-with-logits computes too, and it is lowest where sigmoid(r) = score (here r = logit(0.75) = log 3)."""
    policy, ref, scores = t(-3.0, -6.0, -2.0), t(-5.0, -4.0, -2.0), t(0.75, 0.75, 0.75)
    loss = una_bce(policy, ref, scores, beta=0.1)
    assert_close(loss, F.binary_cross_entropy_with_logits(0.1 * (policy - ref), scores, reduction="none"))
    rewards = torch.linspace(-3, 3, 601, dtype=torch.float64)
    sweep = una_bce(rewards, torch.zeros_like(rewards), torch.full_like(rewards, 0.75), beta=1.0)
    assert_close(rewards[sweep.argmin()].item(), math.log(3), atol=0.01, rtol=0)


def test_dpo_symmetric_is_log2() -> None:
    """Chosen and rejected moved by the same amount from the reference: margin 0, loss log 2."""
    loss = dpo(t(-7.0, -1.0), t(-9.0, -30.0), t(-8.0, -2.0), t(-10.0, -31.0), beta=0.5)
    assert_close(loss, t(LOG2, LOG2))


def test_kto_at_the_reference_is_half_the_weight() -> None:
    """kl = 0 and policy = ref: lr = 0, 1 - sigmoid(0) = 0.5, times w_d = 2.0 (desirable) or w_u = 3.0."""
    same = t(-5.0, -5.0)
    loss = kto(same, same, torch.tensor([True, False]), 0.0, beta=0.1, desirable_weight=2.0, undesirable_weight=3.0)
    assert_close(loss, t(1.0, 1.5))


# ---- gradients -----------------------------------------------------------------------------------


def test_gradients_reach_policy_only() -> None:
    """Reference log-probs, scores and kl are detached inside every loss, even when they require grad."""
    def leaves(*values: float) -> torch.Tensor:
        return t(*values, grad=True)

    for name in ("una_mse", "una_bce"):
        policy, ref, scores = leaves(-3.0, -6.0), leaves(-5.0, -4.0), leaves(1.0, 0.25)
        LOSSES[name].function()(policy, ref, scores, beta=0.1).sum().backward()
        assert policy.grad is not None and policy.grad.abs().min() > 0, name
        assert ref.grad is None and scores.grad is None, name

    pc, pr, rc, rr = leaves(-10.0), leaves(-12.0), leaves(-11.0), leaves(-11.0)
    dpo(pc, pr, rc, rr, beta=0.1).sum().backward()
    assert pc.grad is not None and pr.grad is not None and rc.grad is None and rr.grad is None
    assert pc.grad.item() < 0 < pr.grad.item()  # descent raises the chosen and lowers the rejected

    policy, ref, kl = leaves(-3.0, -6.0), leaves(-5.0, -4.0), torch.tensor(0.5, requires_grad=True)
    kto(policy, ref, torch.tensor([True, False]), kl, beta=0.1, desirable_weight=1.0,
        undesirable_weight=1.0).sum().backward()
    assert policy.grad is not None and policy.grad.abs().min() > 0
    assert ref.grad is None and kl.grad is None

    policy, ref = leaves(1.0, 2.0), leaves(0.0, 0.0)
    assert not kto_kl((policy - ref).sum(), torch.tensor(2)).requires_grad


def test_dpo_gradient_by_hand() -> None:
    """d/d pc of -logsigmoid(beta * m) = -beta * sigmoid(-beta * m); m = 2, beta = 0.1:
    -0.1 * sigmoid(-0.2) = -0.1 * 0.450166 = -0.045017, and +0.045017 for pr."""
    pc, pr = t(-10.0, grad=True), t(-12.0, grad=True)
    dpo(pc, pr, t(-11.0), t(-11.0), beta=0.1).sum().backward()
    assert_close(pc.grad, t(-0.045017), **HAND)
    assert_close(pr.grad, t(0.045017), **HAND)


def test_gradcheck_float64() -> None:
    """Analytic gradients match finite differences for each loss, with respect to the policy log-probs."""
    def f64(*values: float) -> torch.Tensor:
        return t(*values, dtype=torch.float64, grad=True)

    ref, scores = t(-5.0, -4.0, -2.0, dtype=torch.float64), t(1.0, 0.25, 0.6, dtype=torch.float64)
    desirable = torch.tensor([True, False, True])
    assert torch.autograd.gradcheck(lambda p: una_mse(p, ref, scores, beta=0.5), (f64(-3.0, -6.0, -2.5),))
    assert torch.autograd.gradcheck(lambda p: una_bce(p, ref, scores, beta=0.5), (f64(-3.0, -6.0, -2.5),))
    assert torch.autograd.gradcheck(lambda p: kto(p, ref, desirable, 0.3, beta=0.5, desirable_weight=1.0,
                                                  undesirable_weight=1.3), (f64(-3.0, -6.0, -2.5),))
    rc, rr = t(-11.0, -7.0, dtype=torch.float64), t(-11.0, -7.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda pc, pr: dpo(pc, pr, rc, rr, beta=0.5),
                                    (f64(-10.0, -8.0), f64(-12.0, -6.0)))


# ---- stability, dtypes, devices, purity -------------------------------------------------------------


def test_large_rewards_stay_finite() -> None:
    """r = +-1e4: logsigmoid never goes through log(sigmoid(-1e4)) = log(0) = -inf.
    -logsigmoid(1e4) = 0, -logsigmoid(-1e4) = 1e4; sigmoid saturates to 1 and 0."""
    policy, ref = t(1e4, -1e4, grad=True), t(0.0, 0.0)
    ones, zeros = t(1.0, 1.0), t(0.0, 0.0)
    cases = {
        "una_mse": (una_mse(policy, ref, ones, beta=1.0), t(0.0, 1.0)),
        "una_bce": (una_bce(policy, ref, ones, beta=1.0), t(0.0, 1e4)),
        "una_bce_0": (una_bce(policy, ref, zeros, beta=1.0), t(1e4, 0.0)),
        "dpo": (dpo(policy, policy.flip(0), ref, ref, beta=0.5), t(0.0, 1e4)),
        "kto": (kto(policy, ref, torch.tensor([False, True]), 0.0, beta=1.0, desirable_weight=1.0,
                    undesirable_weight=1.0), t(1.0, 1.0)),
    }
    for name, (loss, expected) in cases.items():
        assert_close(loss, expected, msg=name)
        (grad,) = torch.autograd.grad(loss.sum(), policy)
        assert torch.isfinite(grad).all(), name


def call(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> tuple[list[torch.Tensor], torch.Tensor]:
    """Calls table entry `name` on a small batch; returns its inputs and its output."""
    def x(*values: float) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    spec = LOSSES[name]
    hyper = {key: {"beta": 0.1}.get(key, 1.0) for key in spec.hyperparameters}
    policy, ref = x(-3.0, -6.0), x(-5.0, -4.0)
    # Targets in a different dtype than the log-probs: they must not change the loss's dtype.
    scores = torch.tensor([1.0, 0.25], dtype=torch.float64, device=device)
    inputs: dict[str, Callable[[], list[torch.Tensor]]] = {
        "una_mse": lambda: [policy, ref, scores],
        "una_bce": lambda: [policy, ref, scores],
        "dpo": lambda: [policy, x(-7.0, -9.0), ref, x(-6.0, -8.0)],
        "kto": lambda: [policy, ref, torch.tensor([True, False], device=device),
                        torch.tensor(0.2, dtype=torch.float64, device=device)],
        "sft": lambda: [policy, torch.tensor([2, 4], device=device)],
        "orpo": lambda: [policy, x(-7.0, -9.0), torch.tensor([2, 4], device=device), torch.tensor([3, 5], device=device)],
        "dpo_nll": lambda: [policy, x(-7.0, -9.0), ref, x(-6.0, -8.0), torch.tensor([2, 4], device=device)],
    }
    args = inputs[name]()
    return args, spec.function()(*args, **hyper)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_dtype_and_shape_follow_the_logps(name: str, dtype: torch.dtype) -> None:
    _, loss = call(name, dtype)
    assert loss.dtype == dtype and loss.shape == (2,)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("name", list(LOSSES))
def test_inputs_are_not_modified(name: str) -> None:
    args, _ = call(name)
    again, _ = call(name)
    for before, after in zip(again, args):
        assert_close(after, before)
        assert after._version == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", list(LOSSES))
def test_cuda_matches_cpu(name: str) -> None:
    _, on_gpu = call(name, device="cuda")
    _, on_cpu = call(name)
    assert on_gpu.device.type == "cuda"
    assert_close(on_gpu.cpu(), on_cpu)


def test_shape_mistakes_are_errors() -> None:
    """A [B, 1] reference against a [B] policy would broadcast to [B, B] terms; per-token log-probs are 2-D."""
    policy = t(-3.0, -6.0)
    with pytest.raises(ValueError, match=r"una_mse: ref_logps is not 1-D \(got shape \(2, 1\)\)"):
        una_mse(policy, policy.unsqueeze(1), t(1.0, 0.0), beta=0.1)
    with pytest.raises(ValueError, match=r"una_mse: ref_logps has the wrong shape \(got \(3,\)\)"):
        una_mse(policy, t(-1.0, -2.0, -3.0), t(1.0, 0.0), beta=0.1)
    with pytest.raises(ValueError, match="dpo: policy_chosen_logps is not 1-D"):
        dpo(torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(2, 5), beta=0.1)
    with pytest.raises(ValueError, match="una_bce: scores has the wrong shape"):
        una_bce(policy, policy, t(1.0), beta=0.1)
    with pytest.raises(ValueError, match="sft: n_tokens has the wrong shape"):
        sft(policy, torch.tensor([3]))
    with pytest.raises(ValueError, match="kto: desirable is not a bool mask"):
        kto(policy, policy, torch.tensor([1, 0]), 0.0, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0)
    with pytest.raises(ValueError, match="kto: kl must be a scalar"):
        kto(policy, policy, torch.tensor([True, False]), t(0.0, 0.0), beta=0.1, desirable_weight=1.0,
            undesirable_weight=1.0)
    with pytest.raises(ValueError, match="implicit_reward: policy_logps is not floating point"):
        implicit_reward(torch.tensor([1, 2]), policy, beta=0.1)
    with pytest.raises(ValueError, match="kto_kl: no mismatched rows"):
        kto_kl(torch.tensor(0.0), torch.tensor(0))
    with pytest.raises(ValueError, match=r"kto_kl: no mismatched rows \(got count 0\)"):
        kto_kl(torch.tensor(0.0), 0)
    with pytest.raises(ValueError, match="kto_kl: log_ratio_sum and count must be scalars"):
        kto_kl(t(1.0, 2.0), torch.tensor(2))


# ---- the table -------------------------------------------------------------------------------------


def test_table_names_kinds_and_references() -> None:
    """docs/design.md "Loss x kind"; only sft trains without a reference."""
    assert {name: set(spec.kinds) for name, spec in LOSSES.items()} == {
        "una_mse": {"sft", "score", "binary", "pairwise"},
        "una_bce": {"sft", "score", "binary", "pairwise"},
        "dpo": {"pairwise"},
        "kto": {"sft", "binary", "pairwise"},
        "sft": {"sft"},
        "orpo": {"sft", "pairwise"},
        "dpo_nll": {"sft", "pairwise"},
    }
    assert [name for name, spec in LOSSES.items() if not spec.needs_reference] == ["sft", "orpo"]
    assert [name for name, spec in LOSSES.items() if spec.needs_kl] == ["kto"]


@pytest.mark.parametrize("name", list(LOSSES))
def test_table_entry_matches_its_function(name: str) -> None:
    """The dotted name resolves (importlib) to a function whose positional arguments are the entry's
    `inputs`, all supplied by the objective, and whose keyword-only ones its hyperparameters, each a
    `loss.*` key, null in the recipe, that resolves to the entry's default; the same for its row term.
    Every key a function it calls takes is among the loss's hyperparameters (resolved for it)."""
    spec = LOSSES[name]
    assert spec.function().__name__ == name and get_loss(name) is spec
    for part, term in ((spec, spec.term), (spec.rows, "row")):
        if part is None:
            continue
        module, _, attribute = part.fn.rpartition(".")
        fn = getattr(importlib.import_module(module), attribute)
        assert part.function() is fn
        params = inspect.signature(fn).parameters.values()
        assert part.inputs == tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
        assert tuple(part.hyperparameters) == tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
        assert all(p.default is inspect.Parameter.empty for p in params)  # defaults live in the table, not here
        assert set(part.inputs) <= (PAIR_INPUTS if term == "pair" else ROW_INPUTS)
        assert part.hyperparameters.items() <= spec.hyperparameters.items()
    assert spec.needs_reference == any(i.startswith("ref_") for i in spec.inputs)
    assert spec.needs_kl == ("kl" in spec.inputs)
    defaults = {f.name: f.default for f in dataclasses.fields(LossConfig)}
    assert all(defaults[key] is None for key in spec.hyperparameters)  # null: the loss's default
    resolved = LossConfig(name=name).resolved()  # type: ignore[arg-type]
    assert all(getattr(resolved, key) == value for key, value in spec.hyperparameters.items())
    for pair in filter(None, (pair_loss(name, choice) for choice in spec.pairwise)):
        assert pair.hyperparameters.keys() <= spec.hyperparameters.keys()
    assert spec.denominator == ("tokens" if name == "sft" else "terms")


def test_which_loss_gives_row_and_pair_terms() -> None:
    """dpo, orpo, dpo_nll: one term per pair; una_* too with loss.pairwise null or dpo, two row terms
    with rows; orpo's and dpo_nll's rows outside pairs their NLL row term; the rest rows."""
    assert pair_loss("dpo", None) is LOSSES["dpo"] and row_loss("dpo") is None
    for name in ("una_mse", "una_bce"):
        assert pair_loss(name, None) is pair_loss(name, "dpo") is LOSSES["dpo"] and pair_loss(name, "rows") is None
        assert row_loss(name) is LOSSES[name]
    for name in ("orpo", "dpo_nll"):
        assert pair_loss(name, None) is LOSSES[name] and row_loss(name) is LOSSES[name].rows is not None
    assert [n for n in LOSSES if pairs_as_one_term(n, "rows")] == ["dpo", "orpo", "dpo_nll"]
    assert [n for n in LOSSES if pairs_as_one_term(n, None)] == ["una_mse", "una_bce", "dpo", "orpo", "dpo_nll"]


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        LOSSES["mine"] = LOSSES["dpo"]  # type: ignore[index]


@pytest.mark.parametrize("bad", ["ipo", "DPO", "", None])
def test_get_loss_error_lists_the_table(bad: object) -> None:
    with pytest.raises(ValueError, match=r"^loss\.name: unknown loss") as caught:
        get_loss(bad)  # type: ignore[arg-type]
    message = str(caught.value)
    assert repr(bad) in message
    assert f"expected one of {', '.join(LOSSES)}." in message


def test_design_loss_table_is_the_code() -> None:
    """docs/design.md's "Loss x kind" table states the entries' kinds, reference, denominator and
    hyperparameters with their defaults: the same facts as `LOSSES`, so it cannot drift."""
    design = (Path(__file__).resolve().parents[1] / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("### Loss x kind", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    assert list(rows) == list(LOSSES)
    for name, (_, kinds, reference, _, denominator, hyper) in rows.items():
        spec = LOSSES[name]
        assert set(kinds.split(", ")) == set(spec.kinds), name
        assert reference == ("yes" if spec.needs_reference else "no"), name
        assert denominator == {"terms": "terms", "tokens": "completion tokens"}[spec.denominator], name
        stated = dict(re.findall(r"(\w+) \(([\d.]+)\)", hyper))
        assert {k: float(v) for k, v in stated.items()} == dict(spec.hyperparameters), name
