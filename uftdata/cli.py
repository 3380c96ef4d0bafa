"""`uftdata`: the command line. Parses options, calls the command modules, prints the summary."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from uftdata import __version__
from uftdata.accounting import Summary
from uftdata.errors import UftDataError
from uftdata.reader import InputFile, expand_inputs
from uftdata.rejects import Rejects
from uftdata.writer import open_rows

app = typer.Typer(
    help="Prepare and mix Unified Fine-Tuning (UFT) data: unfold, score, feedback, mix, inspect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class OnError(str, Enum):
    error = "error"
    skip = "skip"


Inputs = Annotated[list[Path], typer.Argument(help="Input files (.jsonl, .json, .parquet, optionally .gz) or folders.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output Parquet file in the uft row schema.")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="Input layout; detected when omitted.")]
Source = Annotated[str | None, typer.Option(help="Value of the `source` column; default: the first input's name up to its first dot.")]
OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="error: stop at the first bad record. skip: write bad records to the rejects file and go on.")]
RejectsOpt = Annotated[Path | None, typer.Option(help="Rejects file for --on-error skip; default OUT with .rejects.jsonl.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def main() -> None:
    """Console entry point: user errors are one line on stderr and exit status 2."""
    try:
        app()
    except UftDataError as error:
        print(f"uftdata: error: {error.line()}", file=sys.stderr)
        sys.exit(2)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        print(__version__)
        raise typer.Exit()


@contextmanager
def progress_bar(files: list[InputFile], quiet: bool) -> Iterator[Callable[[int], None]]:
    """A bytes progress bar over all inputs (on a terminal only; logs stay clean)."""
    total = sum(f.size() for f in files)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), transient=True, disable=quiet or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("reading", total=total)
        yield lambda n: bar.advance(task, n)


def print_summary(summary: Summary, out: Path, rejects_path: Path | None) -> None:
    s = summary.as_dict()
    print(f"{summary.command}: {s['records_in']} records in, {s['records_used']} used, "
          f"{sum(summary.dropped.values())} dropped -> {s['rows_out']} rows in {out}")
    for name in ("dropped", "turns_dropped", "notes"):
        for reason, n in (s.get(name) or {}).items():  # type: ignore[union-attr]
            print(f"  {name}.{reason}: {n}")
    if rejects_path is not None:
        print(f"  rejects: {rejects_path}")


def run_rows_command(
    command: str,
    inputs: list[Path],
    out: Path,
    on_error: OnError,
    rejects_path: Path | None,
    quiet: bool,
    produce: Callable[[list[InputFile], Rejects, Summary, Callable[[int], None]], Iterator[pl.DataFrame]],
) -> Summary:
    """Shared driver: read inputs, write rows atomically, rejects file, summary in the file footer."""
    files = expand_inputs(inputs)
    rejects = Rejects("skip" if on_error is OnError.skip else "raise")
    summary = Summary(command)
    metadata: dict[str, str] = {}
    with progress_bar(files, quiet) as advance, open_rows(out, metadata) as writer:
        for rows in produce(files, rejects, summary, advance):
            writer.write(rows)
        summary.check()
        metadata["uft.summary"] = json.dumps(summary.as_dict(), sort_keys=True)
    written = None
    if rejects.count:
        written = rejects_path or out.with_name(out.name.removesuffix(".parquet") + ".rejects.jsonl")
        rejects.write(written)
    print_summary(summary, out, written)
    return summary


def _source(source: str | None, files: list[InputFile]) -> str:
    return source or files[0].name.split(".")[0]


@app.command()
def unfold(
    inputs: Inputs,
    out: Out,
    format: Format = None,
    source: Source = None,
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
) -> None:
    """Conversations -> one `sft` row per assistant turn (score 1.0).

    Layouts: ultrachat (raw: `data` = [user, assistant, ...]), sharegpt (`conversations` with
    from/value), messages (`messages` with role/content, e.g. ultrachat_200k). The prompt is every
    message before the turn (system message kept). A conversation is used up to its first
    malformed message (empty content, unknown role, misplaced system message, assistant first,
    two messages of one role in a row); later turns are counted under that reason.
    """
    from uftdata.unfold import unfold_file

    def produce(files, rejects_, summary, advance):  # type: ignore[no-untyped-def]
        name = _source(source, files)
        for f in files:
            yield from unfold_file(f, fmt=format, source=name, rejects=rejects_, summary=summary, progress=advance)

    run_rows_command("unfold", inputs, out, on_error, rejects, quiet, produce)


def parse_scale(text: str | None, option: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(x) for x in text.split(":"))
    except ValueError:
        raise UftDataError(option, "is not MIN:MAX", got=text, expected="e.g. 1:10") from None
    if not lo < hi:
        raise UftDataError(option, "needs MIN < MAX", got=text)
    return lo, hi


def parse_weights(items: list[str]) -> dict[str, float]:
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise UftDataError("--weight", "is not NAME=NUMBER", got=item, expected="e.g. helpfulness=0.65") from None
    return weights


@app.command()
def score(
    inputs: Inputs,
    out: Out,
    format: Format = None,
    source: Source = None,
    weight: Annotated[list[str] | None, typer.Option(help="Attribute weight NAME=W (repeatable); replaces the default HelpSteer2 weights helpfulness=0.65 correctness=0.8 coherence=0.45.")] = None,
    score_column: Annotated[str | None, typer.Option(help="Generic layout: the column holding the rating (needs --scale).")] = None,
    scale: Annotated[str | None, typer.Option(help="MIN:MAX of --score-column; a value outside it is an error.")] = None,
    prompt_column: Annotated[str, typer.Option(help="Generic layout: prompt column (string or message list).")] = "prompt",
    response_column: Annotated[str, typer.Option(help="Generic layout: response column (string or message).")] = "response",
    ultrafeedback_rating: Annotated[str, typer.Option(help="UltraFeedback raw: overall (1-10, (s-1)/9) or fine-grained (1-5, (s-1)/4).")] = "overall",
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
) -> None:
    """Rated responses -> `score` rows with a score in [0,1] and the raw ratings in `attributes`.

    Layouts: helpsteer2 (also HelpSteer v1; multi-turn prompts split on <extra_id_1> markers),
    helpsteer2_disagreements (per-annotator lists, averaged), ultrafeedback (raw, per completion),
    columns (any prompt/response file with --score-column and --scale). Weighted score:
    (sum(w_i * a_i) - lo) / (hi - lo), lo/hi the weighted sum's extremes over the 0-4 ranges.
    """
    from uftdata.rows import convert_files
    from uftdata.score import HELPSTEER2_WEIGHTS, ScoreOptions, adapter_for

    if score_column is not None and scale is None:
        raise UftDataError("--score-column", "needs --scale MIN:MAX", got=score_column)
    options = ScoreOptions(
        weights=parse_weights(weight) if weight else dict(HELPSTEER2_WEIGHTS),
        score_column=score_column,
        scale=parse_scale(scale, "--scale"),
        prompt_column=prompt_column,
        response_column=response_column,
        ultrafeedback_rating=ultrafeedback_rating,
    )
    fmt = "columns" if score_column is not None and format is None else format

    def produce(files, rejects_, summary, advance):  # type: ignore[no-untyped-def]
        return convert_files(files, command="score", fmt=fmt, source=_source(source, files),
                             adapter_for=lambda layout: adapter_for(layout, options),
                             rejects=rejects_, summary=summary, progress=advance)

    run_rows_command("score", inputs, out, on_error, rejects, quiet, produce)


@app.command()
def feedback(
    inputs: Inputs,
    out: Out,
    format: Format = None,
    source: Source = None,
    pairs_from_scores: Annotated[bool, typer.Option("--pairs-from-scores", help="Input: `score` rows (uft schema). Each prompt's highest- and lowest-scored responses become a pair; equal scores: dropped as tie.")] = False,
    ratings: Annotated[bool, typer.Option(help="Carry ratings (e.g. UltraFeedback score_chosen/score_rejected) into the scores; otherwise chosen 1, rejected 0.")] = True,
    rating_scale: Annotated[str | None, typer.Option(help="MIN:MAX of the carried ratings; default 1:10 (UltraFeedback).")] = None,
    split: Annotated[str | None, typer.Option(help="HelpSteer2 preference file: keep only this split (others dropped as other_split).")] = None,
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
) -> None:
    """Pairwise and binary feedback -> `pairwise` rows (two per pair, one `pair_id`) and `binary` rows.

    Layouts: pairwise (prompt + chosen/rejected), pairwise_conversation (UltraFeedback binarized:
    whole conversations), hh_rlhf (transcripts, split on Human:/Assistant: into messages first),
    helpsteer2_preference (preference_strength -3..3; 0 is a tie, dropped), binary (prompt,
    completion, label), binary_messages (messages + label). Chosen and rejected must share the
    prompt (else prompt_mismatch); empty or identical completions are dropped.
    """
    from uftdata.feedback import FeedbackOptions, adapter_for
    from uftdata.feedback import pairs_from_scores as pair_scores
    from uftdata.rows import convert_files

    options = FeedbackOptions(ratings=ratings, rating_scale=parse_scale(rating_scale, "--rating-scale") or (1.0, 10.0),
                              split=split)

    def produce(files, rejects_, summary, advance):  # type: ignore[no-untyped-def]
        if pairs_from_scores:
            return pair_scores(files, source=source, rejects=rejects_, summary=summary, progress=advance)
        return convert_files(files, command="feedback", fmt=format, source=_source(source, files),
                             adapter_for=lambda layout: adapter_for(layout, options),
                             rejects=rejects_, summary=summary, progress=advance)

    run_rows_command("feedback", inputs, out, on_error, rejects, quiet, produce)


@app.command()
def mix(
    recipe: Annotated[Path | None, typer.Argument(help="A recipe YAML whose `mixture:` section is the spec (optional).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Mixture folder (with --sweep: the folder holding one mixture per size). Default: the recipe's mixture.out.")] = None,
    take: Annotated[list[str] | None, typer.Option(help="PATH=COUNT: rows from a uft-schema Parquet file or folder; COUNT is 20k, 260k, 20000, all, or a fraction of the mixture (0.5, 50%). Repeatable; the first source wins duplicates.")] = None,
    test: Annotated[list[str] | None, typer.Option(help="PATH=F holds out the groups of PATH whose seeded hash is below F (e.g. 0.01); PATH=FILE uses FILE as PATH's test split.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for ranking and the test split (default 0, or the recipe's).")] = None,
    total: Annotated[str | None, typer.Option(help="Total rows, for fractional takes.")] = None,
    sweep: Annotated[str | None, typer.Option(help="PATH=N,N,...: one mixture per count of PATH, e.g. ultrachat.parquet=16k,20k,32k,65k,130k,260k; folders named mix_<take>_<take>.")] = None,
    oversample: Annotated[bool, typer.Option("--oversample", help="When a source has fewer rows than asked, repeat rows in rank order (reported) instead of failing.")] = False,
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
) -> None:
    """Build a mixture folder: Parquet shards in rank order, README.md card, manifest.json (last).

    Order: validate, dedup (by id; pairs by pair_id), test split by group (before sampling, so it
    does not move with the ratio), rank by seeded hash, take. Smaller takes are subsets of larger
    ones with the same seed. `datasets.load_dataset(OUT)` reads the result.
    """
    from uftdata.mixout import build_mixtures
    from uftdata.mixspec import load_recipe_mixture, spec_from_options

    if recipe is not None:
        if take or sweep:
            raise UftDataError("mix", "give either a recipe or --take/--sweep, not both")
        spec = load_recipe_mixture(recipe)
        if seed is not None:
            spec = dataclasses.replace(spec, seed=seed)
        if oversample:
            spec = dataclasses.replace(spec, on_short="repeat")
    else:
        spec = spec_from_options(take or [], test or [], seed=seed or 0, total=total, sweep=sweep,
                                 on_short="repeat" if oversample else "error")
    target = out or (Path(spec.out) if spec.out else None)
    if target is None:
        raise UftDataError("mix", "no output folder", fix="Pass -o MIXTURE_DIR (or set mixture.out in the recipe).")
    skip = Rejects("skip" if on_error is OnError.skip else "raise")
    say = None if quiet else (lambda name: print(f"  writing {name}", file=sys.stderr))
    manifests = build_mixtures(spec, target, skip, say)
    for manifest in manifests:
        where = target / manifest["name"] if spec.sweep else target
        counts = ", ".join(f"{split} {c['rows']}" for split, c in manifest["counts"].items())
        print(f"mix: {where}: {counts} rows; content_hash {manifest['content_hash'][:16]}")
        for source in manifest["sources"]:
            acc = source["accounting"]
            print(f"  {source['name']}: {acc['records_in']} in, {acc['records_used']} used, take {source['take']}"
                  f" -> train {source['rows_train']} (repeated {source['repeated_rows']}), test {source['rows_test']}")
            for reason, n in acc["dropped"].items():
                print(f"    dropped.{reason}: {n}")
    if skip.count:
        written = rejects or target.with_name(target.name + ".rejects.jsonl")
        skip.write(written)
        print(f"  rejects: {written}")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A Parquet file in the uft row schema, or a mixture folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Counts by source and kind, score distribution, lengths, and schema validation.

    Exits 1 when a row breaks the schema (each problem is listed with its file and row).
    """
    from uftdata.inspect import inspect_path, render

    report = inspect_path(path)
    print(json.dumps(report, indent=2, sort_keys=True) if as_json else render(report))
    if report["problems"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    main()
