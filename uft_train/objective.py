"""Which loss term each row of a micro-batch gives (DESIGN.md, "Loss x kind"), and its metrics.

- una_mse / una_bce: every row is one term with target `score` (sft rows 1); with
  `loss.pairwise: dpo`, each pair is one DPO term instead of two rows.
- dpo: one term per pair.   - kto: every row; sft rows desirable, binary and pairwise by `label`.
- sft: every row; its term is the summed NLL, and the step divides by completion tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from uft_train import losses
from uft_train.config import LossConfig


@dataclass
class Terms:
    """A micro-batch's loss terms and what the metrics need."""

    values: torch.Tensor                      # [n_terms], differentiable
    kinds: list[str]                          # the kind of each term ("pairwise" for a DPO term)
    rewards: torch.Tensor | None = None       # [B] implicit reward per row (detached), None for sft
    pair_correct: list[bool] = field(default_factory=list)


def pairs_of(examples: Sequence) -> list[tuple[int, int]]:
    """(chosen, rejected) positions of the pairs in a micro-batch (both halves always present)."""
    halves: dict[str, dict[bool, int]] = {}
    for i, ex in enumerate(examples):
        if ex.kind == "pairwise":
            halves.setdefault(ex.pair_id, {})[bool(ex.label)] = i
    return [(h[True], h[False]) for h in halves.values()]


def uses_pair_terms(cfg: LossConfig) -> bool:
    return cfg.name == "dpo" or (cfg.name in ("una_mse", "una_bce") and cfg.pairwise == "dpo")


def micro_batch_terms(cfg: LossConfig, examples: Sequence, policy: torch.Tensor, ref: torch.Tensor | None,
                      kl: torch.Tensor | None = None) -> Terms:
    device = policy.device
    if cfg.name == "sft":
        return Terms(losses.sft(policy, torch.tensor([len(e.input_ids) - e.prompt_len for e in examples],
                                                      device=device)), [e.kind for e in examples])
    assert ref is not None, "implicit-reward losses need reference log-probs"
    rewards = losses.implicit_reward(policy, ref, beta=cfg.beta).detach()
    pairs = pairs_of(examples)
    chosen = torch.tensor([p[0] for p in pairs], device=device, dtype=torch.long)
    rejected = torch.tensor([p[1] for p in pairs], device=device, dtype=torch.long)
    correct = (rewards[chosen] > rewards[rejected]).tolist()  # one transfer, not one per pair
    if cfg.name == "kto":
        desirable = torch.tensor([e.kind == "sft" or bool(e.label) for e in examples], device=device)
        values = losses.kto(policy, ref, desirable, kl, beta=cfg.beta,
                            desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
        return Terms(values, [e.kind for e in examples], rewards, correct)
    parts, kinds = [], []
    if uses_pair_terms(cfg) and pairs:
        parts.append(losses.dpo(policy[chosen], policy[rejected], ref[chosen], ref[rejected], beta=cfg.beta))
        kinds += ["pairwise"] * len(pairs)
    if cfg.name != "dpo":
        single = [i for i, e in enumerate(examples) if not (uses_pair_terms(cfg) and e.kind == "pairwise")]
        if single:
            idx = torch.tensor(single, device=device)
            scores = torch.tensor([examples[i].score for i in single], device=device, dtype=policy.dtype)
            parts.append(losses.get_loss(cfg.name).fn(policy[idx], ref[idx], scores, beta=cfg.beta))
            kinds += [examples[i].kind for i in single]
    values = torch.cat(parts) if parts else policy.sum() * 0.0
    return Terms(values.reshape(-1), kinds, rewards, correct)
