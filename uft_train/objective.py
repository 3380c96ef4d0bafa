"""Which loss terms a micro-batch gives (docs/design.md, "Loss x kind"), read from the loss table.

Each pair is one term of the pair loss where there is one (`loss_table.pair_loss`: dpo, orpo,
dpo_nll, or una_* unless `loss.pairwise: rows`); every other row is one term of the row loss
(`loss_table.row_loss`: the loss's own, or orpo's and dpo_nll's NLL term of sft rows). The recipe's
null `loss.*` values are the loss's table defaults (`LossConfig.resolved`), resolved here.
A loss function's tensor arguments are supplied here by name (`LossSpec.inputs`):
- rows: `policy_logps`, `ref_logps`; `scores` (sft rows 1); `desirable` (sft rows, binary and
  pairwise rows by `label`); `kl`, the step's KL reference point; `n_tokens`, completion tokens.
- pairs: `policy_chosen_logps`, `policy_rejected_logps`, `ref_chosen_logps`, `ref_rejected_logps`;
  `chosen_n_tokens`, `rejected_n_tokens`, the completion tokens of each pair's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from uft_train.config import LossConfig
from uft_train.data import Example
from uft_train.loss_table import LossSpec, pair_loss, row_loss
from uft_train.losses import implicit_reward

Inputs = Mapping[str, Callable[[], torch.Tensor]]  # a loss argument's name -> how to make it
ROW_INPUTS = frozenset({"policy_logps", "ref_logps", "scores", "desirable", "kl", "n_tokens"})
PAIR_INPUTS = frozenset({"policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                         "chosen_n_tokens", "rejected_n_tokens"})


@dataclass(frozen=True)
class Terms:
    """A micro-batch's loss terms and what the metrics need."""

    values: torch.Tensor               # [n_terms], differentiable: pair terms first, then row terms
    kinds: tuple[str, ...]             # the kind of each term ("pairwise" for a pair term)
    rewards: torch.Tensor | None       # [B] implicit reward per row (detached); None without a reference
    pair_correct: tuple[bool, ...]     # per pair: the chosen row's reward above the rejected one's


def micro_batch_terms(cfg: LossConfig, examples: Sequence[Example], pairs: Sequence[tuple[int, int]],
                      policy: torch.Tensor, ref: torch.Tensor | None, kl: torch.Tensor | None = None) -> Terms:
    """The terms of one micro-batch: `examples` in order, `pairs` their `(chosen, rejected)` positions
    (`batching.MicroBatch.pairs`), `policy`/`ref` their log-probs `[B]`, `kl` the step's reference point."""
    device = policy.device
    cfg = cfg.resolved()
    rewards = None if ref is None or cfg.beta is None else implicit_reward(policy, ref, beta=cfg.beta).detach()
    chosen = torch.tensor([c for c, _ in pairs], device=device, dtype=torch.long)
    rejected = torch.tensor([r for _, r in pairs], device=device, dtype=torch.long)
    correct = () if rewards is None else tuple((rewards[chosen] > rewards[rejected]).tolist())  # one transfer
    parts: list[torch.Tensor] = []
    kinds: list[str] = []
    by_pair, by_row = pair_loss(cfg.name, cfg.pairwise), row_loss(cfg.name)
    if by_pair is not None and pairs:
        parts.append(_call(by_pair, cfg, _pair_inputs(examples, pairs, chosen, rejected, policy, ref)))
        kinds += ["pairwise"] * len(pairs)
    paired = {i for pair in pairs for i in pair} if by_pair is not None else set()
    single = [i for i in range(len(examples)) if i not in paired]
    if by_row is not None and single:
        parts.append(_call(by_row, cfg, _row_inputs([examples[i] for i in single], single, policy, ref, kl)))
        kinds += [examples[i].kind for i in single]
    values = torch.cat(parts) if parts else policy.sum() * 0.0
    return Terms(values.reshape(-1), tuple(kinds), rewards, correct)


def _pair_inputs(examples: Sequence[Example], pairs: Sequence[tuple[int, int]], chosen: torch.Tensor,
                 rejected: torch.Tensor, policy: torch.Tensor, ref: torch.Tensor | None) -> Inputs:
    device = policy.device

    def n_tokens(side: int) -> torch.Tensor:
        return torch.tensor([examples[pair[side]].completion_len for pair in pairs], device=device)

    return {
        "policy_chosen_logps": lambda: policy[chosen], "policy_rejected_logps": lambda: policy[rejected],
        "ref_chosen_logps": lambda: _given(ref)[chosen], "ref_rejected_logps": lambda: _given(ref)[rejected],
        "chosen_n_tokens": lambda: n_tokens(0), "rejected_n_tokens": lambda: n_tokens(1),
    }


def _row_inputs(rows: Sequence[Example], positions: list[int], policy: torch.Tensor, ref: torch.Tensor | None,
                kl: torch.Tensor | None) -> Inputs:
    device = policy.device
    index = torch.tensor(positions, device=device)
    return {
        "policy_logps": lambda: policy[index],
        "ref_logps": lambda: _given(ref)[index],
        "scores": lambda: torch.tensor([e.score for e in rows], device=device, dtype=policy.dtype),
        "desirable": lambda: torch.tensor([e.kind == "sft" or bool(e.label) for e in rows], device=device),
        "kl": lambda: _given(kl),
        "n_tokens": lambda: torch.tensor([e.completion_len for e in rows], device=device),
    }


def _call(spec: LossSpec, cfg: LossConfig, inputs: Inputs) -> torch.Tensor:
    """The table entry's function on the arguments it names, with the recipe's hyperparameters."""
    missing = [name for name in spec.inputs if name not in inputs]
    if missing:  # a new table entry whose argument is not supplied above: a bug, not the user's
        raise KeyError(f"{spec.fn}: no input named {', '.join(missing)}; this term supplies {', '.join(inputs)}")
    hyperparameters = {key: getattr(cfg, key) for key in spec.hyperparameters}
    unset = [key for key, value in hyperparameters.items() if value is None]
    if unset:  # a function taking a key its loss's table entry does not list (so never resolved): a bug
        raise KeyError(f"{spec.fn}: loss.{', loss.'.join(unset)} is not among {cfg.name}'s hyperparameters")
    values: torch.Tensor = spec.function()(*(inputs[name]() for name in spec.inputs), **hyperparameters)
    return values


def _given(tensor: torch.Tensor | None) -> torch.Tensor:
    if tensor is None:  # the table says the loss takes it, and the loop did not compute it: a bug
        raise ValueError("a loss input the table requires (reference log-probs or kl) was not computed")
    return tensor
