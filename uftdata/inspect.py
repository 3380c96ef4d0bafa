"""`uftdata inspect`: what is in a schema file or mixture folder, and whether it is valid.

Reads in batches (memory: one batch plus one length per row). For a mixture folder, also checks
each shard's sha256 against `manifest.json`.

What is a finding and what is an error: a file that is read and is not what `inspect` expects (a
row breaking the schema, a raw JSONL or Parquet file not yet converted, a mixture shard that differs
from its manifest, even one too damaged to read) is a listed problem, exit 1. A path that cannot be
read at all (missing, not Parquet, damaged, a broken `.gz`) outside a mixture is one error line,
exit 2: there is nothing to report on.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from uftdata import layouts, schema
from uftdata.errors import UftDataError
from uftdata.hub import HubOptions, is_hub_url
from uftdata.mixout import MANIFEST
from uftdata.reader import InputFile, expand_inputs, first_record, iter_frames
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
    found = expand_inputs([path], hub)
    # A folder's Parquet files are what is inspected (a mixture's manifest.json is checked below);
    # a file named directly, or a folder holding no Parquet at all, is reported as not being rows.
    files = [f for f in found if f.container == "parquet"] or found
    mixture = not is_hub_url(str(path)) and (Path(path) / MANIFEST).is_file()
    problems: list[str] = []
    stats = []
    pairs = []
    for f in files:
        if f.container != "parquet":
            problems.append(_not_rows(f))
            continue
        try:
            file_problems = schema.schema_problems(f.parquet().schema_arrow)
            if file_problems:
                problems += _schema_problems(f, file_problems)
                continue
            for frame in iter_frames(f, schema.SCHEMA, [], Rejects.raising()):
                bad = schema.row_problems(frame.drop("_line"))
                problems += [f"{f.where(frame['_line'][r])}: field {c!r} {p}" for r, c, p in bad.iter_rows()]
                stats.append(_batch_stats(frame, split=_split_of(f.name)))
                pairs.append(frame.filter(pl.col("kind") == "pairwise").select("pair_id", "label"))
        except UftDataError as e:
            if not mixture:
                raise  # a file given to inspect that cannot be read: exit 2
            problems.append(f"{f.name}: cannot be read as Parquet ({e.what})")  # e.g. a shard damaged after mixing
    if pairs:
        broken = schema.pair_problems(pl.concat(pairs))
        problems += [f"pair_id {pid}: {p}" for pid, p in broken.iter_rows()]
    if mixture:
        problems += mixture_problems(Path(path))
    rows = pl.concat(stats) if stats else pl.DataFrame()
    report = {"path": str(path), "files": [f.name for f in files], "rows": rows.height,
              **(_summarize(rows) if rows.height else {}), "problems": problems}
    return report, rows


def inspect_and_plot(path: Path | str, hub: HubOptions | None, plot: Path | None) -> dict:
    """`uftdata inspect`: the report; with `plot`, also DIR/scores.png and DIR/lengths.png, listed
    under the report's `plots`."""
    report, stats = inspect_with_stats(path, hub)
    if plot is not None:
        from uftdata.plots import plot_lengths, plot_scores  # matplotlib: only when drawing

        report["plots"] = [str(plot_scores(stats, plot / "scores.png")), str(plot_lengths(stats, plot / "lengths.png"))]
    return report


def format_inspect(report: dict, *, as_json: bool) -> str:
    """What `uftdata inspect` prints: the JSON report, or `render` and a `plot:` line per figure."""
    if as_json:
        return json.dumps(report, indent=2, sort_keys=True)
    return "\n".join([render(report), *(f"plot: {p}" for p in report.get("plots", []))])


def _not_rows(f: InputFile) -> str:
    """The problem of a JSONL or JSON file: inspect reads rows, which only the converters write.
    Reading its first record also makes a file that cannot be read (a broken .gz) an error."""
    _, record = first_record(f)
    return f"{f.display}: is not in the uft row schema (a Parquet file of rows); {_conversion(f, record)}"


def _schema_problems(f: InputFile, problems: list[str]) -> list[str]:
    """A Parquet file's column problems; one problem with the converting command when the file holds
    none of the row schema's own columns but looks like a source layout (e.g. raw ultrachat_200k)."""
    own = {"kind", "group", "turn", "pair_id", "source"}
    if own & set(f.parquet().schema_arrow.names):
        return [f"{f.name}: {p}" for p in problems]
    _, record = first_record(f)
    return [f"{f.display}: is not in the uft row schema ({len(problems)} columns missing or mistyped); "
            + _conversion(f, record)]


def _conversion(f: InputFile, record: dict) -> str:
    """What `record` looks like and the command that converts its file into rows."""
    if set(layouts.BY_NAME["uft"].keys) <= record.keys():
        return "its records have the row schema's fields, but rows are read from Parquet, as the converters write them"
    found = [layout for layout in layouts.LAYOUTS if layout.detected and set(layout.keys) <= record.keys()
             and layout.matches(record)]
    if not found:
        return (f"its first record's fields {sorted(record)[:8]} match no known layout; convert it with "
                f"`uftdata unfold|score|feedback {f.display} -o ROWS.parquet --format LAYOUT` (see their --help)")
    first = min(layout.step for layout in found)
    names = [layout.name for layout in found if layout.step == first]
    layout = layouts.BY_NAME[names[0]]
    stem = f.name.split(".")[0]
    stem += "_rows" if f"{stem}.parquet" == f.name else ""
    return (f"it looks like the {' or '.join(names)} layout ({layout.description}); convert it with "
            f"`uftdata {layout.command} {f.display} -o {stem}.parquet`, then inspect that")


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
            "mean": _number(rows["score"].mean()),
            "min": _number(rows["score"].min()),
            "max": _number(rows["score"].max()),
            "histogram": {f"[{lo:.1f},{hi:.1f}{']' if hi == 1 else ')'}": n
                          for lo, hi, n in zip(edges, edges[1:], histogram)},
        },
        "lengths": {col: _quantiles(rows[col]) for col in ("prompt_chars", "completion_chars", "prompt_messages")},
    }


def _quantiles(values: pl.Series) -> dict:
    return {"mean": round(_number(values.mean()), 1),
            **{f"p{q}": int(_number(values.quantile(q / 100, "nearest"))) for q in (50, 95)},
            "max": int(_number(values.max()))}


def _number(value: object) -> float:
    """A polars aggregate, which its stubs type as any Python literal, as the number it is here."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"expected a number from a non-empty numeric column, got {value!r}")
    return float(value)


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
