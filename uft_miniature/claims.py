"""The paper's claims, each a paired comparison of two methods over the same seeds, and the rule
that says whether it holds here (stated before any run):

For a claim "A beats B", the per-seed differences d_s = A_s - B_s of the selection criterion's
metric (mean known reward of greedy answers, on the test questions) give a 95% t-interval
mean(d) +- t(0.975, n-1) * sd(d) / sqrt(n). The claim **holds** when the interval lies above 0,
**does not hold** when it lies below 0 (B beats A), and otherwise we **cannot tell**; with one
seed there is no interval and we cannot tell. Accuracy's differences are shown beside it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from uft_miniature.methods import control_names, ratio_name

METRIC = "reward"
# t(0.975, df) for df = 1..10 (two-sided 95%).
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


@dataclass(frozen=True)
class Claim:
    text: str
    a: str
    b: str
    """Methods (rows of the results table); the claim is "a beats b"."""


def claims(largest_ratio: float) -> tuple[Claim, ...]:
    """The paper's three experiments as claims; the sweep's controls name its largest ratio."""
    r = f"{largest_ratio:g}"
    short, long = control_names(largest_ratio)
    return (
        Claim("UFT on instruction data beats SFT", "uft_instruction_only", "sft"),
        Claim("UFT on the 1:1 mixture beats SFT -> DPO", "uft", "sft_then_dpo"),
        Claim("UFT on the 1:1 mixture beats SFT -> KTO", "uft", "sft_then_kto"),
        Claim("UFT on the 1:1 mixture beats SFT -> UNA", "uft", "sft_then_una"),
        Claim("UFT on the 1:1 mixture beats ORPO on the same data", "uft", "orpo"),
        Claim("UFT on the 1:1 mixture beats DPO+NLL on the same data", "uft", "dpo_nll"),
        Claim("DPO after SFT improves on SFT", "sft_then_dpo", "sft"),
        Claim("KTO after SFT improves on SFT", "sft_then_kto", "sft"),
        Claim("UNA after SFT improves on SFT", "sft_then_una", "sft"),
        Claim("Adding rated data to UFT helps (1:1 mixture against instruction data only)",
              "uft", "uft_instruction_only"),
        Claim(f"More instruction data per rated row helps at equal steps ({r}:1 against 1:1, 1:1's steps)",
              short, "uft"),
        Claim(f"More instruction data per rated row helps at equal steps ({r}:1 against 1:1, {r}:1's steps)",
              ratio_name(largest_ratio), long),
    )


def interval(differences: list[float]) -> tuple[float, float]:
    """Mean and the 95% t half-width (inf for fewer than two values)."""
    mean = statistics.fmean(differences)
    n = len(differences)
    if n < 2:
        return mean, math.inf
    t = T_975[min(n - 1, len(T_975)) - 1]
    return mean, t * statistics.stdev(differences) / math.sqrt(n)


def verdict(mean: float, half: float) -> str:
    if mean - half > 0:
        return "holds"
    if mean + half < 0:
        return "does not hold"
    return "cannot tell"


def judge(claim: Claim, runs: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict | None:
    """The claim's paired differences and verdict; None when a side was not run."""
    if claim.a not in runs or claim.b not in runs:
        return None
    seeds = sorted(set(runs[claim.a]) & set(runs[claim.b]), key=int)
    result: dict = {"claim": claim.text, "a": claim.a, "b": claim.b, "seeds": seeds}
    for metric in (METRIC, "accuracy"):
        diffs = [runs[claim.a][s][metric] - runs[claim.b][s][metric] for s in seeds]
        mean, half = interval(diffs)
        result[metric] = {"per_seed": [round(d, 6) for d in diffs], "mean": round(mean, 6),
                          "half_width": None if math.isinf(half) else round(half, 6)}
        if metric == METRIC:
            result["verdict"] = verdict(mean, half)
    return result


def claims_markdown(judged: list[dict]) -> str:
    lines = [f"| claim (A beats B) | A | B | {METRIC}: A - B per seed | mean ± 95% | accuracy: mean | verdict |",
             "|---|---|---|---|---:|---:|---|"]
    for j in judged:
        r, acc = j[METRIC], j["accuracy"]
        half = "n/a" if r["half_width"] is None else f"{r['half_width']:.3f}"
        per_seed = ", ".join(f"{d:+.3f}" for d in r["per_seed"])
        lines.append(f"| {j['claim']} | {j['a']} | {j['b']} | {per_seed} | {r['mean']:+.3f} ± {half} | "
                     f"{acc['mean']:+.3f} | **{j['verdict']}** |")
    return "\n".join(lines)
