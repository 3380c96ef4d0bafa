"""bench_data.py's report: the machine, the per-size Markdown tables and the ratios the targets name.

Standard library only, like bench_data.py (see its docstring for why).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

MIB = 1 << 20
LABELS = {
    "unfold": "`uftdata unfold`",
    "datasets_map": "`datasets.map` unfold (no ids)",
    "datasets_map_ids": "`datasets.map` unfold + ids (xxhash per row)",
    "io_floor": "pyarrow read + write (I/O floor)",
    "mix": "`uftdata mix`",
}
# (ratio, label, target, met?) from the issue; the "+ ids" rows compare outputs with the same columns.
TARGETS: list[tuple[str, str, str, Callable[[float], bool]]] = [
    ("unfold_over_io_floor", "unfold / I/O floor (wall)", "<= 1.5", lambda r: r <= 1.5),
    ("datasets_map_over_unfold", "datasets.map / unfold (wall)", ">= 2.5", lambda r: r >= 2.5),
    ("datasets_map_ids_over_unfold", "datasets.map + ids / unfold (wall)", ">= 2.5", lambda r: r >= 2.5),
    ("unfold_peak_over_datasets_map_peak", "unfold peak / datasets.map peak", "<= 1.0", lambda r: r <= 1.0),
    ("unfold_peak_over_datasets_map_ids_peak", "unfold peak / datasets.map + ids peak", "<= 1.0", lambda r: r <= 1.0),
]
FLAT = 1.2  # our reading of "flat" for unfold's peak RSS from the smallest size to the largest


def machine() -> dict:
    """What the figures were measured on (Linux /proc; 'unknown' elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "unknown")
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else "MemTotal: 0 kB"
    ram_kib = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal")))
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "ram_gib": round(ram_kib / MIB, 1),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "python": platform.python_version(),
        **{package: version(package) for package in ("uft", "polars", "pyarrow", "datasets", "xxhash")},
    }


def medians(result: dict) -> dict[str, tuple[float, float]]:
    """Per step: (median wall s, median peak RSS MiB)."""
    return {name: (statistics.median(s["wall_s"]), statistics.median(s["peak_rss_mib"]))
            for name, s in result["steps"].items()}


def size_ratios(result: dict) -> dict[str, float]:
    m = medians(result)
    return {
        "unfold_over_io_floor": m["unfold"][0] / m["io_floor"][0],
        "datasets_map_over_unfold": m["datasets_map"][0] / m["unfold"][0],
        "datasets_map_ids_over_unfold": m["datasets_map_ids"][0] / m["unfold"][0],
        "unfold_peak_over_datasets_map_peak": m["unfold"][1] / m["datasets_map"][1],
        "unfold_peak_over_datasets_map_ids_peak": m["unfold"][1] / m["datasets_map_ids"][1],
    }


def size_table(result: dict, ratios: dict[str, float]) -> list[str]:
    mix_argv = result["steps"]["mix"]["argv"]
    take = mix_argv[mix_argv.index("--take") + 1].rpartition("=")[2]
    lines = [
        f"### {result['conversations']:,} conversations: {result['input_bytes'] / MIB:,.0f} MiB of JSONL "
        f"-> {result['rows']:,} rows",
        "",
        "| step | wall s | peak RSS MiB | output MiB |",
        "|---|---:|---:|---:|",
    ]
    for name, (wall, peak) in medians(result).items():
        label = LABELS[name] + (f" (take {int(take):,}, test 1%)" if name == "mix" else "")
        lines.append(f"| {label} | {wall:.1f} | {peak:,.0f} | {result['steps'][name]['output_bytes'] / MIB:,.0f} |")
    lines += [
        "",
        f"`datasets` also wrote up to {result['datasets_cache_bytes'] / MIB:,.0f} MiB of Arrow cache per run "
        "(part of its time; deleted after each run).",
        "",
        "| ratio | value | target | met |",
        "|---|---:|---|---|",
    ]
    lines += [f"| {label} | {ratios[key]:.2f} | {target} | {'yes' if met(ratios[key]) else 'NO'} |"
              for key, label, target, met in TARGETS]
    return lines + [""]


def markdown_report(results: list[dict], info: dict, command: list[str], repeat: int,
                    disk: dict[str, int]) -> tuple[str, dict]:
    """The report's text, and the ratios for the JSON file."""
    ratios = {r["conversations"]: size_ratios(r) for r in results}
    lines = [
        "## Data benchmark",
        "",
        f"`{' '.join(command)}` (median of {repeat}); {info['nproc']} CPUs ({info['cpu_model']}), "
        f"{info['ram_gib']} GiB RAM, load average {info['load_avg_1m_at_start']:.2f} at start; Python "
        f"{info['python']}, uft {info['uft']}, polars {info['polars']}, pyarrow {info['pyarrow']}, "
        f"datasets {info['datasets']}.",
        "",
    ]
    for result in results:
        lines += size_table(result, ratios[result["conversations"]])
    flat = None
    if len(results) > 1:
        small, large = medians(results[0])["unfold"][1], medians(results[-1])["unfold"][1]
        flat = large / small
        lines += [f"unfold peak RSS at {results[-1]['conversations']:,} / at {results[0]['conversations']:,} "
                  f"conversations: {flat:.2f} (target: flat; met if <= {FLAT}: {'yes' if flat <= FLAT else 'NO'})", ""]
    outputs = ", ".join(f"{v / MIB:,.0f} MiB of outputs for {k.split('_')[1]}" for k, v in disk.items()
                        if k.startswith("outputs_"))
    lines.append(f"Disk: {disk['inputs_bytes'] / MIB:,.0f} MiB of generated inputs, {outputs}.")
    summary = {"ratios": {str(n): r for n, r in ratios.items()}, "unfold_peak_largest_over_smallest": flat}
    return "\n".join(lines), summary
