"""bench_train.py's figures and report: each method's figure over --repeat runs, the ratios the issue
sets as targets, and the Markdown. Standard library only, like the parent that imports it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

LABELS = {
    "sft": ("uft-train `sft` (chosen rows)", "8 seqs: policy fwd+bwd"),
    # una_* on pairwise rows: one term per pair (loss.pairwise defaults to the DPO term), so 8 pairs a step.
    "una_online": ("uft-train `una_mse`, online reference", "8 pairs = 16 seqs: policy fwd+bwd, ref fwd"),
    "una_precompute": ("uft-train `una_mse`, precomputed reference", "8 pairs = 16 seqs: policy fwd+bwd (ref from cache)"),
    "uft_dpo": ("uft-train `dpo` (no target)", "8 pairs = 16 seqs: policy fwd+bwd, ref fwd"),
    "uft_kto": ("uft-train `kto` (no target)", "8 seqs: policy fwd+bwd, ref fwd; 8 KL seqs: policy + ref fwd"),
    "trl_dpo": ("TRL `DPOTrainer`", "8 pairs = 16 seqs: policy fwd+bwd, ref fwd"),
    "trl_kto": ("TRL `KTOTrainer`", "8 seqs: policy fwd+bwd, ref fwd; 8 KL seqs: policy + ref fwd"),
}
Target = tuple[str, str, str, str, Callable[[float], bool]]
# (label, numerator, denominator, target, met?) over tokens/s; the peak-RSS target is in `ratio_rows`.
SPEED_TARGETS: list[Target] = [
    ("our dpo / TRL DPO (tokens/s, same loss)", "uft_dpo", "trl_dpo", ">= 1.2", lambda r: r >= 1.2),
    ("our kto / TRL KTO (tokens/s, same loss)", "uft_kto", "trl_kto", ">= 1.2", lambda r: r >= 1.2),
    ("UFT online / TRL DPO (tokens/s)", "una_online", "trl_dpo", ">= 1.3", lambda r: r >= 1.3),
    ("UFT online / TRL KTO (tokens/s)", "una_online", "trl_kto", ">= 1.3", lambda r: r >= 1.3),
    ("UFT precomputed / our SFT (tokens/s)", "una_precompute", "sft", ">= 0.9", lambda r: r >= 0.9),
]
RSS_TARGET = 0.9


def run_figures(result: dict, warmup: int) -> dict:
    """One run's figures: medians over its timed steps (after `warmup`)."""
    timed = [(t, s) for t, s in list(zip(result["tokens"], result["step_s"]))[warmup:] if s]
    return {"tokens_per_step": statistics.median(t for t, _ in timed),
            "step_s": statistics.median(s for _, s in timed),
            "tokens_per_s": statistics.median(t / s for t, s in timed)}


def method_figures(runs: list[dict]) -> dict:
    """A method's figures over its runs: the median of each run's figure (tokens/s is the median over
    runs of each run's median step tokens/s; peak RSS the median of the runs' peaks)."""
    keys = ("tokens_per_step", "step_s", "tokens_per_s", "peak_rss_mib", "process_s", "load_1m")
    figures = {key: statistics.median(run[key] for run in runs) for key in keys}
    spread = [run["tokens_per_s"] for run in runs]
    return {**figures, "runs": len(runs), "tokens_per_s_min": min(spread), "tokens_per_s_max": max(spread),
            "threads": runs[0]["threads"]}


def ratio_rows(figures: dict[str, dict]) -> list[tuple[str, float | None, str, str]]:
    """(label, value or None if a method did not run, target, met) for every ratio of the report."""
    rows = []
    for label, num, den, target, met in SPEED_TARGETS:
        value = (figures[num]["tokens_per_s"] / figures[den]["tokens_per_s"]) if num in figures and den in figures else None
        rows.append((label, value, target, "-" if value is None else ("yes" if met(value) else "NO")))
    ours = [figures[m]["peak_rss_mib"] for m in ("una_online", "una_precompute") if m in figures]
    theirs = [figures[m]["peak_rss_mib"] for m in ("trl_dpo", "trl_kto") if m in figures]
    value = max(ours) / min(theirs) if ours and theirs else None
    rows.append(("peak RSS: max(UFT online, precomputed) / min(TRL DPO, KTO)", value, f"<= {RSS_TARGET}",
                 "-" if value is None else ("yes" if value <= RSS_TARGET else "NO")))
    return rows


def shape_line(shape: str, setup: dict) -> str:
    rows = (f"{setup['pairs']:,} pairs ({setup['rows']:,} rows)")
    if shape == "uniform":
        return (f"**Uniform shape**: {rows} of synthetic text, every sequence {setup['length_max']} tokens; "
                f"{setup['vocab']:,}-token vocabulary.")
    return (f"**Real shape**: {rows} of real hh-rlhf text (../shared/samples), recipes/mix_20k_20k.yaml's "
            f"template, Mistral-7B-v0.1's tokenizer ({setup['vocab']:,} tokens); sequence tokens min "
            f"{setup['length_min']:,}, median {setup['length_median']:,.0f}, mean {setup['length_mean']:,}, max "
            f"{setup['length_max']:,}; {setup['rows_dropped']} row(s) dropped by uft-train's tokenization.")


def shape_tables(shape: str, figures: dict[str, dict], setup: dict) -> list[str]:
    lines = [shape_line(shape, setup), "",
             "| method | a step | tokens/step | step s | tokens/s (min-max) | vs our SFT | peak RSS MiB | process s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    sft = figures.get("sft", {}).get("tokens_per_s")
    for method, f in figures.items():
        name, work = LABELS[method]
        versus = f"{f['tokens_per_s'] / sft:.2f}" if sft else "-"
        spread = f" ({f['tokens_per_s_min']:,.0f}-{f['tokens_per_s_max']:,.0f})" if f["runs"] > 1 else ""
        lines.append(f"| {name} | {work} | {f['tokens_per_step']:,.0f} | {f['step_s']:.3f} | "
                     f"{f['tokens_per_s']:,.0f}{spread} | {versus} | {f['peak_rss_mib']:,.0f} | {f['process_s']:.1f} |")
    lines += ["", "| ratio | value | target | met |", "|---|---:|---|---|"]
    for label, value, target, met in ratio_rows(figures):
        lines.append(f"| {label} | {'-' if value is None else f'{value:.2f}'} | {target} | {met} |")
    return lines + [""]


def markdown(by_shape: dict[str, dict[str, dict]], setups: dict[str, dict], info: dict, command: list[str],
             steps: int, warmup: int, repeat: int) -> str:
    first = next(iter(next(iter(by_shape.values())).values()))
    loads = [f["load_1m"] for figures in by_shape.values() for f in figures.values()]
    lines = [
        "## Trainer benchmark", "",
        f"`{' '.join(command)}`: {steps} timed steps after {warmup} warm-up, each method {repeat} run(s) "
        f"(median of the runs' median step); {info['nproc']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, "
        f"load average {info['load_avg_1m_at_start']:.2f} at start, {min(loads):.2f}-{max(loads):.2f} at the "
        f"runs' starts; torch {info['torch']} ({first['threads']} threads), transformers {info['transformers']}, "
        f"peft {info['peft']}, trl {info['trl']}.", "",
        "Tiny Llama (hidden 256, 6 layers, 4 heads, MLP 736) + LoRA (r 16, all projections), float32 on CPU; "
        "batch 8. Tokens = the policy forward's sequences (no reference or KL forwards).", "",
    ]
    for shape, figures in by_shape.items():
        lines += shape_tables(shape, figures, setups[shape])
    return "\n".join(lines)
