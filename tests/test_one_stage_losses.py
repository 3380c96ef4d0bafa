"""The one-stage alternatives (`orpo`, `dpo_nll`) against hand computations and TRL 1.16 on identical
log-probs, the objective's terms for a UFT mixture's rows under them, and the per-loss defaults of
`loss.beta` and `loss.pairwise` (docs/design.md, "Loss x kind")."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from uft_train.config import LossConfig
from uft_train.data import Example
from uft_train.losses import _log1mexp, dpo, dpo_nll, dpo_nll_row, orpo, orpo_row, una_mse
from uft_train.objective import micro_batch_terms

HAND = {"rtol": 0.0, "atol": 1e-6}


def t(*values: float, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=grad)


def n(*counts: int) -> torch.Tensor:
    return torch.tensor(counts)


# ---- hand computations ----------------------------------------------------------------------------


def test_orpo_by_hand() -> None:
    """lambda = 0.1; m = logp / tokens; log_odds = m - log(1 - exp(m)); term = -m_c + lambda * -logsigmoid(lo_c - lo_r).
    pair 1: m_c = -2/4 = -0.5, m_r = -6/3 = -2.0; log(1 - e^-0.5) = log 0.393469 = -0.932752,
      log(1 - e^-2) = log 0.864665 = -0.145413; lo_c = 0.432752, lo_r = -1.854587, diff 2.287339;
      -logsigmoid(2.287339) = log(1 + 0.101524) = 0.096706; term 0.5 + 0.0096706 = 0.509671.
    pair 2: m_c = -3/2 = -1.5, m_r = -1/2 = -0.5; log(1 - e^-1.5) = log 0.776870 = -0.252482;
      lo_c = -1.247518, lo_r = 0.432752, diff -1.680270; -logsigmoid(-1.680270) = log(1 + 5.367002) = 1.851129;
      term 1.5 + 0.185113 = 1.685113."""
    loss = orpo(t(-2.0, -3.0), t(-6.0, -1.0), n(4, 2), n(3, 2), orpo_lambda=0.1)
    assert_close(loss, t(0.509671, 1.685113), **HAND)


def test_dpo_nll_by_hand() -> None:
    """beta = 0.1, alpha = 0.5: dpo term + alpha * (-pc / chosen tokens).
    pair 1: margin (-10 + 11) - (-12 + 11) = 2, -logsigmoid(0.2) = 0.598139; NLL 10 / 5 = 2.0; 0.598139 + 1.0 = 1.598139.
    pair 2: margin (-8 + 7) - (-6 + 7) = -2, -logsigmoid(-0.2) = 0.798139; NLL 8 / 4 = 2.0; 0.798139 + 1.0 = 1.798139."""
    loss = dpo_nll(t(-10.0, -8.0), t(-12.0, -6.0), t(-11.0, -7.0), t(-11.0, -7.0), n(5, 4), beta=0.1, nll_alpha=0.5)
    assert_close(loss, t(1.598139, 1.798139), **HAND)


def test_row_terms_by_hand() -> None:
    """An sft row's term: its mean token NLL, weighted as the chosen answer's NLL in the pair term:
    orpo 1 x (3.0 / 2, 12.5 / 5) = (1.5, 2.5); dpo_nll alpha 0.5 x the same = (0.75, 1.25)."""
    assert_close(orpo_row(t(-3.0, -12.5), n(2, 5)), t(1.5, 2.5))
    assert_close(dpo_nll_row(t(-3.0, -12.5), n(2, 5), nll_alpha=0.5), t(0.75, 1.25))


def test_log1mexp_is_stable_at_both_ends() -> None:
    """log(1 - e^x) in float32: x = -1e-10 gives log(1e-10) = -23.025851 (1 - exp(x) rounds to 0, -inf);
    x = -0.5 gives -0.932752; x = -50 gives -e^-50 = -1.9287e-22 (log(1 - tiny) rounds to 0)."""
    values = _log1mexp(t(-1e-10, -0.5, -50.0))
    assert_close(values, t(-23.025851, -0.932752, -1.9287498e-22), rtol=1e-6, atol=0.0)
    assert torch.isinf(torch.log(1 - torch.exp(t(-1e-10)))).all()  # what the naive form gives
    pc = t(-1e-6, grad=True)
    orpo(pc, t(-30.0), n(1), n(1), orpo_lambda=0.1).sum().backward()
    assert pc.grad is not None and torch.isfinite(pc.grad).all()


def test_gradients_and_gradcheck() -> None:
    """Descent raises the chosen answer and lowers the rejected one; analytic = numeric in float64."""
    pc, pr = t(-2.0, grad=True), t(-6.0, grad=True)
    orpo(pc, pr, n(4), n(3), orpo_lambda=0.1).sum().backward()
    assert pc.grad is not None and pr.grad is not None and pc.grad.item() < 0 < pr.grad.item()

    def f64(*values: float) -> torch.Tensor:
        return t(*values, dtype=torch.float64, grad=True)

    rc, rr = t(-11.0, -7.0, dtype=torch.float64), t(-11.0, -7.5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c, r: orpo(c, r, n(4, 2), n(3, 2), orpo_lambda=0.3),
                                    (f64(-2.0, -3.0), f64(-6.0, -1.0)))
    assert torch.autograd.gradcheck(lambda c, r: dpo_nll(c, r, rc, rr, n(5, 4), beta=0.5, nll_alpha=0.7),
                                    (f64(-10.0, -8.0), f64(-12.0, -6.0)))


# ---- against TRL 1.16 on identical log-probs ---------------------------------------------------------


def _batch(seed: int) -> dict[str, torch.Tensor]:
    """8 pairs of per-token log-probs: chosen completions all 7 tokens (TRL's NLL is one token mean over
    the batch, ours each pair's mean: equal when the lengths are), rejected ones 3 to 10 tokens."""
    g = torch.Generator().manual_seed(seed)
    chosen = -torch.rand(8, 7, generator=g, dtype=torch.float64) * 3
    rejected_len = torch.randint(3, 11, (8,), generator=g)
    rejected_mask = torch.arange(10)[None, :] < rejected_len[:, None]
    rejected = -torch.rand(8, 10, generator=g, dtype=torch.float64) * 3 * rejected_mask
    ref = -torch.rand(2, 8, generator=g, dtype=torch.float64) * 20
    return {"chosen_tok": chosen, "pc": chosen.sum(1), "pr": rejected.sum(1), "nc": torch.full((8,), 7),
            "nr": rejected_len, "rc": ref[0], "rr": ref[1]}


def test_orpo_equals_trl_orpo_trainer() -> None:
    """TRL's `ORPOTrainer.odds_ratio_loss` (trl/experimental/orpo/orpo_trainer.py:670, a method reading
    only `self.beta` and `self.accelerator.device`) on mean token log-probs, as its `concatenated_forward`
    computes them (`average_log_prob=True`), and its loss `policy_nll_loss - losses.mean()` (:848) with the
    NLL the token mean of the chosen completions. TRL computes in float32; so do we here."""
    trainer = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    b = {k: v.float() if v.is_floating_point() else v for k, v in _batch(0).items()}
    stub = types.SimpleNamespace(beta=0.1, accelerator=types.SimpleNamespace(device="cpu"))
    losses, *_ = trainer.ORPOTrainer.odds_ratio_loss(stub, b["pc"] / b["nc"], b["pr"] / b["nr"])
    ours = orpo(b["pc"], b["pr"], b["nc"], b["nr"], orpo_lambda=0.1)
    nll = -b["chosen_tok"].mean()
    assert_close(ours - (-b["pc"] / b["nc"]), -losses, rtol=0.0, atol=1e-6)  # the odds-ratio terms, per pair
    assert_close(ours.mean(), nll - losses.mean(), rtol=0.0, atol=1e-6)  # the batch loss


def test_dpo_nll_equals_trl_sigmoid_plus_sft() -> None:
    """TRL's DPOTrainer with `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, alpha]`, written out from
    trl/trainer/dpo_trainer.py (its loss is not a standalone function): `chosen_logratios = chosen_logps -
    ref_chosen_logps` (:1350), `delta_score = chosen_scores - rejected_scores` (:1383), sigmoid
    `-F.logsigmoid(self.beta * delta_score)` (:1388), sft `-chosen_per_token_logps[chosen_mask].mean()`
    (:1498), `loss += per_sequence_loss.mean() * loss_weight` (:1528)."""
    b = _batch(1)
    beta, alpha = 0.1, 0.7
    delta = (b["pc"] - b["rc"]) - (b["pr"] - b["rr"])
    trl_loss = -F.logsigmoid(beta * delta).mean() * 1.0 + (-b["chosen_tok"].mean()) * alpha
    ours = dpo_nll(b["pc"], b["pr"], b["rc"], b["rr"], b["nc"], beta=beta, nll_alpha=alpha)
    assert_close(ours.mean(), trl_loss, rtol=0.0, atol=1e-12)
    assert_close(ours - alpha * (-b["pc"] / b["nc"]), dpo(b["pc"], b["pr"], b["rc"], b["rr"], beta=beta))


# ---- the objective on a UFT mixture's rows -------------------------------------------------------------


def example(kind: str, completion: int, label: bool | None = None) -> Example:
    score = 1.0 if label in (None, True) else 0.0
    return Example(0, kind, score, label, "p" if kind == "pairwise" else None, "g", tuple(range(2 + completion)), 2,
                   "i", "s")


# a pair (chosen 4 tokens, rejected 3) and an sft row of 2 tokens; log-probs per row, and the reference
ROWS = [example("pairwise", 4, True), example("pairwise", 3, False), example("sft", 2)]
PAIRS = [(0, 1)]
POLICY, REF = t(-2.0, -6.0, -3.0), t(-1.0, -5.0, -3.5)


def test_orpo_mixture_gives_a_pair_term_and_an_sft_row_term() -> None:
    """The pair: orpo's term (m_c = -0.5, m_r = -2.0: 0.509671, from test_orpo_by_hand); the sft row: its
    mean token NLL 3.0 / 2 = 1.5. No reference, so no implicit reward."""
    terms = micro_batch_terms(LossConfig(name="orpo"), ROWS, PAIRS, POLICY, None)
    assert terms.kinds == ("pairwise", "sft") and terms.rewards is None
    assert_close(terms.values, t(0.509671, 1.5), **HAND)


def test_dpo_nll_mixture_gives_a_pair_term_and_an_sft_row_term() -> None:
    """Defaults beta 0.1, alpha 1: the pair's margin (-2 + 1) - (-6 + 5) = 0, dpo log 2 = 0.693147, plus
    NLL 2 / 4 = 0.5: 1.193147; the sft row: 1 x 3.0 / 2 = 1.5."""
    terms = micro_batch_terms(LossConfig(name="dpo_nll"), ROWS, PAIRS, POLICY, REF)
    assert terms.kinds == ("pairwise", "sft")
    assert_close(terms.values, t(math.log(2) + 0.5, 1.5), **HAND)


def test_una_pairs_default_to_the_dpo_term_with_una_beta() -> None:
    """loss.pairwise null: una_mse's pair is one dpo term with una's beta 0.01 (margin (-2 + 1) - (-6 + 5) = 0:
    log 2), the sft row its una_mse term (r = 0.01 x 0.5 = 0.005, (sigmoid(0.005) - 1)^2 = 0.498750^2 = 0.248752);
    `rows` keeps the pair's rows as two una_mse terms (targets 1 and 0)."""
    terms = micro_batch_terms(LossConfig(name="una_mse"), ROWS, PAIRS, POLICY, REF)
    assert terms.kinds == ("pairwise", "sft")
    assert_close(terms.values, t(math.log(2), 0.248752), **HAND)
    rows = micro_batch_terms(LossConfig(name="una_mse", pairwise="rows"), ROWS, PAIRS, POLICY, REF)
    assert rows.kinds == ("pairwise", "pairwise", "sft")
    assert_close(rows.values, una_mse(POLICY, REF, t(1.0, 0.0, 1.0), beta=0.01))


@pytest.mark.parametrize(("name", "beta", "pairwise"), [("una_mse", 0.01, "dpo"), ("una_bce", 0.01, "dpo"),
                                                        ("dpo", 0.1, None), ("kto", 0.1, None), ("sft", None, None),
                                                        ("orpo", None, None), ("dpo_nll", 0.1, None)])
def test_null_resolves_to_the_loss_default(name: str, beta: float | None, pairwise: str | None) -> None:
    """una_* 0.01 (UNA/UFT), dpo, kto and dpo_nll 0.1 (TRL); keys a loss does not use resolve to null,
    explicit values stay."""
    cfg = LossConfig(name=name).resolved()  # type: ignore[arg-type]
    assert (cfg.beta, cfg.pairwise) == (beta, pairwise)
    assert LossConfig(name=name, beta=0.03).resolved().beta == (None if beta is None else 0.03)  # type: ignore[arg-type]
