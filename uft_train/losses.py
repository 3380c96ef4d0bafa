"""Training losses: pure functions over per-example sequence log-probs (docs/design.md, "The method").

Every `*_logps` argument is a 1-D tensor `[B]`: log-probs summed over each completion's tokens (prompt
masked). Every loss returns a `[B]` tensor of per-example terms, and the training loop reduces them
(docs/design.md, "Reduction"): the sum of a step's terms divided by the number of terms in the optimizer step
(all micro-batches, all ranks), or by the step's completion tokens where the loss's `denominator` in
`uft_train.loss_table` (what each loss needs) is `"tokens"` (`sft`). Reducing outside keeps the math
independent of micro-batching and DDP.

Gradients reach the policy log-probs only: reference log-probs, targets and KTO's `kl` are detached
here, so a reference pass that forgot `torch.no_grad()` cannot leak into the update.

Dtype: each loss computes in the promoted dtype of its log-prob arguments (float32 in, float32 out;
bfloat16 in, bfloat16 out) and casts targets to it, so float64 scores from numpy do not silently turn
a float32 loss into float64. Checks look only at shapes and dtypes, never at tensor values, so no
loss forces a device sync (`kto_kl`, once per step, checks its row count's value: its one sync).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def implicit_reward(policy_logps: Tensor, ref_logps: Tensor, *, beta: float) -> Tensor:
    """`r = beta * (logp_policy(y|x) - logp_ref(y|x))` per example, `[B]`; the loop logs it per kind."""
    dtype = _check_logps("implicit_reward", policy_logps=policy_logps, ref_logps=ref_logps)
    return _reward(policy_logps, ref_logps, beta=beta, dtype=dtype)


def una_mse(policy_logps: Tensor, ref_logps: Tensor, scores: Tensor, *, beta: float) -> Tensor:
    """UNA score loss, the UFT loss (UNA Eq. 13, UFT Eq. 6): `(sigmoid(r) - score)^2`.

    `scores` are explicit rewards in [0, 1]; sft rows carry 1 (UFT Eq. 7).
    """
    dtype = _check_logps("una_mse", policy_logps=policy_logps, ref_logps=ref_logps)
    scores = _target("una_mse", "scores", scores, like=policy_logps, dtype=dtype)
    reward = _reward(policy_logps, ref_logps, beta=beta, dtype=dtype)
    return (torch.sigmoid(reward) - scores).square()


def una_bce(policy_logps: Tensor, ref_logps: Tensor, scores: Tensor, *, beta: float) -> Tensor:
    """UNA binary loss: `-[score * logsigmoid(r) + (1 - score) * logsigmoid(-r)]`.

    The papers use it for 0/1 targets only, where it is the logistic loss on `r`. Fractional scores
    (score rows, sft rows' 1.0 mixed with them) are our extension: the cross-entropy against a soft
    label, minimised at `sigmoid(r) = score` like `una_mse`.
    """
    dtype = _check_logps("una_bce", policy_logps=policy_logps, ref_logps=ref_logps)
    scores = _target("una_bce", "scores", scores, like=policy_logps, dtype=dtype)
    reward = _reward(policy_logps, ref_logps, beta=beta, dtype=dtype)
    return -(scores * F.logsigmoid(reward) + (1 - scores) * F.logsigmoid(-reward))


def dpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    *,
    beta: float,
) -> Tensor:
    """DPO, one term per pair: `-logsigmoid(r_chosen - r_rejected)`, i.e.
    `-logsigmoid(beta * ((pc - rc) - (pr - rr)))`."""
    dtype = _check_logps(
        "dpo",
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen = _reward(policy_chosen_logps, ref_chosen_logps, beta=beta, dtype=dtype)
    rejected = _reward(policy_rejected_logps, ref_rejected_logps, beta=beta, dtype=dtype)
    return -F.logsigmoid(chosen - rejected)


def kto(
    policy_logps: Tensor,
    ref_logps: Tensor,
    desirable: Tensor,
    kl: Tensor | float,
    *,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
) -> Tensor:
    """KTO as TRL's `kto` loss type, with `lr = logp - logp_ref`:
    desirable rows `w_d * (1 - sigmoid(beta * (lr - kl)))`, others `w_u * (1 - sigmoid(beta * (kl - lr)))`.

    `desirable` is a bool `[B]` (sft rows true; binary and pairwise rows by `label`). `kl` is the
    step's scalar reference point from `kto_kl`; it is detached here, as in the paper and
    TRL, so no gradient flows through it.
    """
    dtype = _check_logps("kto", policy_logps=policy_logps, ref_logps=ref_logps)
    _check_shape("kto", "desirable", desirable, like=policy_logps)
    if desirable.dtype != torch.bool:
        raise ValueError(f"kto: desirable is not a bool mask (got dtype {desirable.dtype}); expected torch.bool. "
                         "Pass the rows' labels as a bool mask.")
    kl = torch.as_tensor(kl, dtype=dtype, device=policy_logps.device).detach()
    if kl.ndim != 0:
        raise ValueError(f"kto: kl must be a scalar tensor (got shape {tuple(kl.shape)}); expected shape (). "
                         "Compute it once per step with kto_kl.")
    log_ratio = policy_logps.to(dtype) - ref_logps.detach().to(dtype)
    # 1 - sigmoid(x) is written sigmoid(-x): the same value without cancellation when sigmoid(x) -> 1.
    desirable_terms = desirable_weight * torch.sigmoid(beta * (kl - log_ratio))
    undesirable_terms = undesirable_weight * torch.sigmoid(beta * (log_ratio - kl))
    return torch.where(desirable, desirable_terms, undesirable_terms)


def kto_kl(log_ratio_sum: Tensor, count: Tensor | int) -> Tensor:
    """KTO's reference point, `max(0, log_ratio_sum / count)`, detached, shape `()`, in
    `log_ratio_sum`'s dtype.

    `log_ratio_sum` is the sum of `logp(y_j|x_i) - logp_ref(y_j|x_i)` over the mismatched rows (each
    prompt with its derangement partner's completion) of the whole optimizer step, and `count` their
    number, both gathered over micro-batches and summed over ranks before this is called: the clamp
    applies to the global mean, which the mean of per-micro-batch clamped means is not. The loop
    (`uft_train.kl`) calls it for training steps and for evaluation; nothing else computes the mean.
    """
    count = torch.as_tensor(count, device=log_ratio_sum.device)
    if log_ratio_sum.shape != () or count.shape != ():
        raise ValueError(f"kto_kl: log_ratio_sum and count must be scalars (got shapes {tuple(log_ratio_sum.shape)} "
                         f"and {tuple(count.shape)})")
    if not log_ratio_sum.is_floating_point():
        raise ValueError(f"kto_kl: log_ratio_sum is not floating point (got {log_ratio_sum.dtype})")
    if not float(count) > 0:
        raise ValueError(f"kto_kl: no mismatched rows (got count {float(count):g}); expected at least 1. "
                         "KTO needs a global batch of at least 2.")
    return (log_ratio_sum.detach() / count.detach().to(log_ratio_sum.dtype)).clamp(min=0)


def sft(policy_logps: Tensor, n_tokens: Tensor) -> Tensor:
    """Supervised fine-tuning: each example's NLL summed over its completion tokens, `-logp(y|x)`.

    Not a per-example mean: docs/design.md divides the step's summed NLL by the step's completion tokens
    (its `denominator` in `uft_train.loss_table` is `"tokens"`), so every token weighs the same whatever the micro-batching.
    `n_tokens` (`[B]`, the completion token counts the loop will sum for that denominator) is taken
    only so a mismatch with the log-probs is caught here.
    """
    _check_logps("sft", policy_logps=policy_logps)
    _check_shape("sft", "n_tokens", n_tokens, like=policy_logps)
    return -policy_logps


def _reward(policy_logps: Tensor, ref_logps: Tensor, *, beta: float, dtype: torch.dtype) -> Tensor:
    return beta * (policy_logps.to(dtype) - ref_logps.detach().to(dtype))


def _check_logps(where: str, **logps: Tensor) -> torch.dtype:
    """Every log-prob argument is a floating 1-D `[B]` tensor of one shape; returns the dtype to compute in."""
    first_name, first = next(iter(logps.items()))
    for name, tensor in logps.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{where}: {name} is not floating point (got dtype {tensor.dtype}); "
                             "expected a floating-point tensor of log-probs.")
        if tensor.ndim != 1:
            raise ValueError(f"{where}: {name} is not 1-D (got shape {tuple(tensor.shape)}); expected [B]. "
                             "Sum per-token log-probs over each completion first.")
        _check_shape(where, name, tensor, like=first, like_name=first_name)
    return functools.reduce(torch.promote_types, (tensor.dtype for tensor in logps.values()))


def _check_shape(where: str, name: str, tensor: Tensor, *, like: Tensor, like_name: str = "policy_logps") -> None:
    # Equal shapes, not broadcastable ones: a [B, 1] against a [B] would silently give [B, B] terms.
    if tensor.shape != like.shape:
        raise ValueError(f"{where}: {name} has the wrong shape (got {tuple(tensor.shape)}); "
                         f"expected the shape of {like_name}, {tuple(like.shape)}: one value per example.")


def _target(where: str, name: str, tensor: Tensor, *, like: Tensor, dtype: torch.dtype) -> Tensor:
    _check_shape(where, name, tensor, like=like)
    return tensor.detach().to(dtype)


# --- one-stage alternatives: a pair term per pair, an NLL term per sft row of the same mixture -------


def orpo(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    chosen_n_tokens: Tensor,
    rejected_n_tokens: Tensor,
    *,
    orpo_lambda: float,
) -> Tensor:
    """ORPO (Hong et al. 2024), one term per pair and no reference: the chosen answer's mean token NLL
    plus `orpo_lambda * -logsigmoid(log_odds(chosen) - log_odds(rejected))`.

    `log_odds(y) = m - log(1 - exp(m))` with `m = logp(y|x) / |y|`, the mean token log-prob (the paper's
    length-normalised P(y|x)); `log(1 - exp(m))` is computed stably (`_log1mexp`). TRL's ORPOTrainer
    computes the same odds-ratio term; its NLL is one token mean over the batch's chosen sequences
    (prompt tokens included), where this is each pair's own completion mean, so that a step's loss is
    a mean of terms like every other loss's.
    """
    dtype = _check_logps("orpo", policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    chosen = _per_token("orpo", "chosen_n_tokens", policy_chosen_logps, chosen_n_tokens, dtype)
    rejected = _per_token("orpo", "rejected_n_tokens", policy_rejected_logps, rejected_n_tokens, dtype)
    log_odds = (chosen - rejected) - (_log1mexp(chosen) - _log1mexp(rejected))
    return -chosen - orpo_lambda * F.logsigmoid(log_odds)


def orpo_row(policy_logps: Tensor, n_tokens: Tensor) -> Tensor:
    """orpo's term for an sft row outside a pair: its mean token NLL, `-logp(y|x) / |y|`, weighted 1 as
    the chosen answer's NLL in orpo's pair term (an instruction row is a chosen answer without a rival)."""
    dtype = _check_logps("orpo_row", policy_logps=policy_logps)
    return -_per_token("orpo_row", "n_tokens", policy_logps, n_tokens, dtype)


def dpo_nll(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_n_tokens: Tensor,
    *,
    beta: float,
    nll_alpha: float,
) -> Tensor:
    """DPO with an NLL term on the chosen answer (RPO, Pang et al. 2024; TRL's `loss_type=["sigmoid",
    "sft"]`, LLaMA-Factory's `pref_ftx`), one term per pair: `dpo(...) + nll_alpha * -logp(chosen) / |chosen|`.

    The NLL is each pair's own completion mean (TRL's `sft` term is one token mean over the batch's
    chosen completions: equal where the chosen completions have equal lengths).
    """
    dpo_terms = dpo(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta=beta)
    nll = -_per_token("dpo_nll", "chosen_n_tokens", policy_chosen_logps, chosen_n_tokens, dpo_terms.dtype)
    return dpo_terms + nll_alpha * nll


def dpo_nll_row(policy_logps: Tensor, n_tokens: Tensor, *, nll_alpha: float) -> Tensor:
    """dpo_nll's term for an sft row outside a pair: `nll_alpha * -logp(y|x) / |y|`, the weight the
    chosen answer's NLL has in dpo_nll's pair term."""
    dtype = _check_logps("dpo_nll_row", policy_logps=policy_logps)
    return -nll_alpha * _per_token("dpo_nll_row", "n_tokens", policy_logps, n_tokens, dtype)


def _per_token(where: str, name: str, logps: Tensor, n_tokens: Tensor, dtype: torch.dtype) -> Tensor:
    """`logps / n_tokens`, the mean token log-prob; a count below 1 is taken as 1 (as TRL clamps it)."""
    _check_shape(where, name, n_tokens, like=logps, like_name="the log-probs")
    return logps.to(dtype) / n_tokens.detach().clamp(min=1).to(dtype)


def _log1mexp(x: Tensor) -> Tensor:
    """`log(1 - exp(x))` for `x <= 0` without cancellation: `log(-expm1(x))` above `-ln 2`, where
    `exp(x)` is near 1, and `log1p(-exp(x))` below it, where `exp(x)` is small (Maechler 2012)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
