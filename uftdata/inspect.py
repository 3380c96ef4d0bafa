"""`uftdata inspect`: what is in a schema file or mixture folder, and whether it is valid.

Reads in batches (memory: one batch plus one length per row). For a mixture folder, also checks
each shard's sha256 against `manifest.json`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa

from uftdata import schema
from uftdata.hub import HubOptions, is_hub_url
from uftdata.mixout import MANIFEST
from uftdata.reader import expand_inputs, iter_frames
from uftdata.rejects import Rejects
from uftdata.verify import mixture_problems

MAX_LISTED = 20
SCORE_BINS = 10


def inspect_path(path: Path | str, hub: HubOptions | None = None) -> dict:
    """The report `render` prints (and `--json` dumps): counts, scores, lengths, problems."""
    return inspect_with_stats(path, hub)[0]


def inspect_with_stats(path: Path | str, hub: HubOptions | None = None) -> tuple[dict, pl.DataFrame]:
    """The report and the per-row stats behind it (split, source, kind, score, prompt_chars,
    completion_chars, prompt_messages; empty when no row is valid): what `uftdata.plots` draws.
    `path`: a schema file, a mixture folder, or a Hub dataset (hf://datasets/...)."""
    files = [f for f in expand_inputs([path], hub) if f.container == "parquet"]
    problems: list[str] = []
    stats = []
    pairs = []
    for f in files:
        try:
            file_problems = schema.schema_problems(f.parquet().schema_arrow)
        except (pa.ArrowInvalid, OSError) as e:  # e.g. a shard damaged after mixing
            problems.append(f"{f.name}: cannot be read as Parquet ({' '.join(str(e).split())})")
            continue
        if file_problems:
            problems += [f"{f.name}: {p}" for p in file_problems]
            continue
        try:
            for frame in iter_frames(f, schema.SCHEMA, [], Rejects.raising()):
                bad = schema.row_problems(frame.drop("_line"))
                problems += [f"{f.where(frame['_line'][r])}: field {c!r} {p}" for r, c, p in bad.iter_rows()]
                stats.append(_batch_stats(frame, split=_split_of(f.name)))
                pairs.append(frame.filter(pl.col("kind") == "pairwise").select("pair_id", "label"))
        except (pa.ArrowInvalid, OSError) as e:
            problems.append(f"{f.name}: cannot be read as Parquet ({' '.join(str(e).split())})")
    if pairs:
        broken = schema.pair_problems(pl.concat(pairs))
        problems += [f"pair_id {pid}: {p}" for pid, p in broken.iter_rows()]
    if not is_hub_url(str(path)) and (Path(path) / MANIFEST).is_file():
        problems += mixture_problems(Path(path))
    rows = pl.concat(stats) if stats else pl.DataFrame()
    report = {"path": str(path), "files": [f.name for f in files], "rows": rows.height,
              **(_summarize(rows) if rows.height else {}), "problems": problems}
    return report, rows


def _split_of(name: str) -> str:
    return name.split("-")[0] if name.startswith(("train-", "test-")) else "all"


def _batch_stats(frame: pl.DataFrame, split: str) -> pl.DataFrame:
    chars = pl.element().struct.field("content").str.len_chars()
    return frame.select(
        pl.lit(split).alias("split"), "source", "kind", "score",
        prompt_chars=pl.col("prompt").list.eval(chars).list.sum(),
        completion_chars=pl.col("completion").list.eval(chars).list.sum(),
        prompt_messages=pl.col("prompt").list.len(),
    )


def _summarize(rows: pl.DataFrame) -> dict:
    counts = rows.group_by("split", "source", "kind").len().sort("split", "source", "kind")
    edges = [i / SCORE_BINS for i in range(SCORE_BINS + 1)]
    bins = (rows["score"] * SCORE_BINS).floor().clip(0, SCORE_BINS - 1).cast(pl.Int32)
    histogram = [int((bins == b).sum()) for b in range(SCORE_BINS)]
    return {
        "counts": [dict(zip(counts.columns, r)) for r in counts.iter_rows()],
        "score": {
            "mean": float(rows["score"].mean()),  # type: ignore[arg-type]
            "min": float(rows["score"].min()),  # type: ignore[arg-type]
            "max": float(rows["score"].max()),  # type: ignore[arg-type]
            "histogram": {f"[{lo:.1f},{hi:.1f}{']' if hi == 1 else ')'}": n
                          for lo, hi, n in zip(edges, edges[1:], histogram)},
        },
        "lengths": {col: _quantiles(rows[col]) for col in ("prompt_chars", "completion_chars", "prompt_messages")},
    }


def _quantiles(values: pl.Series) -> dict:
    return {"mean": round(float(values.mean()), 1),  # type: ignore[arg-type]
            **{f"p{q}": int(values.quantile(q / 100, "nearest")) for q in (50, 95)},  # type: ignore[arg-type]
            "max": int(values.max())}  # type: ignore[arg-type]


def render(report: dict) -> str:
    lines = [f"{report['path']}: {report['rows']} rows in {len(report['files'])} file(s)"]
    if report["rows"]:
        lines.append("counts (split / source / kind):")
        lines += [f"  {c['split']:<6} {c['source']:<24} {c['kind']:<9} {c['len']}" for c in report["counts"]]
        s = report["score"]
        lines.append(f"score: mean {s['mean']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}")
        peak = max(s["histogram"].values()) or 1
        lines += [f"  {b:<11} {n:>8} {'#' * round(30 * n / peak)}" for b, n in s["histogram"].items()]
        lines.append("lengths:")
        lines += [f"  {k:<17} " + ", ".join(f"{q} {v}" for q, v in q_.items()) for k, q_ in report["lengths"].items()]
    problems = report["problems"]
    lines.append(f"schema: {'valid' if not problems else f'{len(problems)} problem(s)'}")
    lines += [f"  {p}" for p in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more (--json lists all)")
    return "\n".join(lines)
