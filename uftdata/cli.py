"""`uftdata`: the command line. Parses options and calls the command modules, which own what is
printed (accounting.format_summary, mixcmd, inspect, publish and export's format_* functions)."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from uftdata import __version__
from uftdata.errors import UftDataError
from uftdata.failures import console_failures
from uftdata.hub import HubOptions
from uftdata.rejects import OnError as RejectsMode
from uftdata.rowcommand import RowsOutput, run_rows_command

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

    @property
    def mode(self) -> RejectsMode:
        """The `Rejects` mode: `error` stops at the first bad record (it raises)."""
        return "skip" if self is OnError.skip else "raise"


Inputs = Annotated[list[str], typer.Argument(help="Input files (.jsonl, .json, .parquet, optionally .gz), folders, or Hub datasets hf://datasets/ORG/NAME[@REVISION][/PATH].")]
HfSplit = Annotated[str | None, typer.Option("--hf-split", help="hf:// inputs: the split to read (default: train).")]
HfConfig = Annotated[str | None, typer.Option("--hf-config", help="hf:// inputs: the config of the dataset card's `configs` (default: its default one).")]
HfRevision = Annotated[str | None, typer.Option("--hf-revision", help="hf:// inputs: branch, tag or commit (default: main); the commit read is recorded.")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output Parquet file in the uft row schema.")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="Input layout; detected when omitted.")]
Source = Annotated[str | None, typer.Option(help="Value of the `source` column for every input. Default, per input: a Hub dataset's NAME, a folder's name, or a file's name without its extensions and a trailing split name (_train, _test, _validation, _dev, ...), e.g. hh-rlhf_harmless-base_test.jsonl -> hh-rlhf_harmless-base.")]
OnErrorOpt = Annotated[OnError, typer.Option("--on-error", help="error: stop at the first bad record. skip: write bad records to the rejects file and go on.")]
RejectsOpt = Annotated[Path | None, typer.Option(help="Rejects file for --on-error skip; default OUT with .rejects.jsonl.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace OUT (and its rejects file) even if uftdata did not write it; never a folder or an input.")]


def main() -> None:
    """Console entry point: user errors (`UftError`) and I/O failures are one line on stderr and exit
    status 2; Ctrl-C is one line and exit status 130 (uftdata.failures)."""
    with console_failures("uftdata"):
        app()


def _print_version(value: bool) -> None:
    """Eager: click checks for a missing command before a group's callback runs, so a plain
    `--version` flag read in `_root` would end in "Missing command"."""
    if value:
        print(f"uftdata {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                                callback=_print_version)] = False) -> None:
    """Prepare and mix Unified Fine-Tuning (UFT) data: unfold, score, feedback, mix, inspect."""


def _output(out: Path, on_error: OnError, rejects: Path | None, quiet: bool, overwrite: bool) -> RowsOutput:
    return RowsOutput(out, on_error.mode, rejects, quiet, overwrite)


@app.command()
def unfold(
    inputs: Inputs,
    out: Out,
    format: Format = None,
    source: Source = None,
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
    hf_split: HfSplit = None,
    hf_config: HfConfig = None,
    hf_revision: HfRevision = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Conversations -> one `sft` row per assistant turn (score 1.0).

    Layouts: ultrachat (raw: `data` = [user, assistant, ...]), sharegpt (`conversations` with
    from/value), messages (`messages` with role/content, e.g. ultrachat_200k). The prompt is every
    message before the turn (system message kept). A conversation is used up to its first
    malformed message (empty content, unknown role, misplaced system message, assistant first,
    two messages of one role in a row); later turns are counted under that reason.
    """
    from uftdata.unfold import unfold_inputs

    run_rows_command("unfold", inputs, HubOptions(hf_split, hf_config, hf_revision),
                     _output(out, on_error, rejects, quiet, overwrite), unfold_inputs(inputs, format, source))


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
    hf_split: HfSplit = None,
    hf_config: HfConfig = None,
    hf_revision: HfRevision = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Rated responses -> `score` rows with a score in [0,1] and the raw ratings in `attributes`.

    Layouts: helpsteer2 (also HelpSteer v1; multi-turn prompts split on <extra_id_1> markers),
    helpsteer2_disagreements (per-annotator lists, averaged), ultrafeedback (raw, per completion),
    columns (any prompt/response file with --score-column and --scale). Weighted score:
    (sum(w_i * a_i) - lo) / (hi - lo), lo/hi the weighted sum's extremes over the 0-4 ranges.
    """
    from uftdata.score import HELPSTEER2_WEIGHTS, ScoreOptions, score_inputs

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
    run_rows_command("score", inputs, HubOptions(hf_split, hf_config, hf_revision),
                     _output(out, on_error, rejects, quiet, overwrite), score_inputs(inputs, fmt, source, options))


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
    hf_split: HfSplit = None,
    hf_config: HfConfig = None,
    hf_revision: HfRevision = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Pairwise and binary feedback -> `pairwise` rows (two per pair, one `pair_id`) and `binary` rows.

    Layouts: pairwise (prompt + chosen/rejected), pairwise_conversation (UltraFeedback binarized:
    whole conversations), hh_rlhf (transcripts, split on Human:/Assistant: into messages first),
    helpsteer2_preference (preference_strength -3..3; 0 is a tie, dropped), binary (prompt,
    completion, label), binary_messages (messages + label). Chosen and rejected must share the
    prompt (else prompt_mismatch); empty or identical completions are dropped.
    """
    from uftdata.feedback import FeedbackOptions, feedback_inputs

    options = FeedbackOptions(ratings=ratings, rating_scale=parse_scale(rating_scale, "--rating-scale") or (1.0, 10.0),
                              split=split)
    run_rows_command("feedback", inputs, HubOptions(hf_split, hf_config, hf_revision),
                     _output(out, on_error, rejects, quiet, overwrite),
                     feedback_inputs(inputs, format, source, options, from_scores=pairs_from_scores))


@app.command()
def mix(
    recipe: Annotated[Path | None, typer.Argument(help="A recipe YAML whose `mixture:` section is the spec (optional).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(metavar="KEY.PATH=VALUE", show_default=False, help="After a recipe: mixture.* values to replace, as for uft-train (VALUE is YAML: mixture.sources.0.take=16k).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Mixture folder (with --sweep: the folder holding one mixture per size). Default: the recipe's mixture.out.")] = None,
    take: Annotated[list[str] | None, typer.Option(help="PATH=COUNT: rows from a uft-schema Parquet file or folder; COUNT is 20k, 260k, 20000, all, or a fraction of the mixture (0.5, 50%). Repeatable; the first source wins duplicates.")] = None,
    test: Annotated[list[str] | None, typer.Option(help="PATH=F holds out the groups of PATH whose seeded hash is below F (e.g. 0.01); PATH=FILE uses FILE as PATH's test split.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for ranking and the test split (default 0, or the recipe's).")] = None,
    total: Annotated[str | None, typer.Option(help="Total rows, for fractional takes.")] = None,
    sweep: Annotated[str | None, typer.Option(help="PATH=N,N,...: one mixture per count of PATH, e.g. ultrachat.parquet=16k,20k,32k,65k,130k,260k; folders named mix_<take>_<take>.")] = None,
    oversample: Annotated[bool, typer.Option("--oversample", help="When a source has fewer rows than asked, repeat rows in rank order (reported) instead of failing.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it is an earlier mixture (with --sweep: a folder of mixtures only); never another folder or a file.")] = False,
    on_error: OnErrorOpt = OnError.error,
    rejects: RejectsOpt = None,
    quiet: Quiet = False,
) -> None:
    """Build a mixture folder: Parquet shards in rank order, README.md card, manifest.json (last).

    Order: validate, dedup (by id; pairs by pair_id; the first source wins, and within a source the
    lowest score), test split by group (before sampling, so it does not move with the ratio), rank
    by seeded hash, take. Smaller takes are subsets of larger ones with the same seed. A sweep is
    written whole or not at all. `datasets.load_dataset(OUT)` reads the result. Each source is named
    by the `source` value of its rows (by its file or folder name when its rows carry several).

    Stops (exit 2) instead of building less than asked: fractions past 1, a total the counts exceed,
    a test file that is a training file (same path or same bytes), an input without valid rows, a
    source without training rows or with an empty test split.
    """
    from uftdata.mixcmd import run_mix
    from uftdata.mixspec import load_recipe_mixture, spec_from_options

    if recipe is not None:
        if take or sweep:
            raise UftDataError("mix", "give either a recipe or --take/--sweep, not both")
        spec = load_recipe_mixture(recipe, overrides or ())  # the reader and checks of uft-train
        if seed is not None:
            spec = dataclasses.replace(spec, seed=seed)
        if oversample:
            spec = dataclasses.replace(spec, on_short="repeat")
    elif overrides:  # only reachable with options before the first positional
        raise UftDataError("mix", "KEY.PATH=VALUE overrides apply to a recipe", got=overrides)
    else:
        spec = spec_from_options(take or [], test or [], seed=seed or 0, total=total, sweep=sweep,
                                 on_short="repeat" if oversample else "error")
    run_mix(spec, out, on_error=on_error.mode, rejects=rejects, quiet=quiet, overwrite=overwrite)


@app.command()
def inspect(
    path: Annotated[str, typer.Argument(help="A Parquet file in the uft row schema, a mixture folder, or a Hub dataset hf://datasets/ORG/NAME[@REVISION][/PATH].")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="DIR", help="Also draw DIR/scores.png (score histogram per kind, by source) and DIR/lengths.png (prompt and completion characters).")] = None,
    hf_split: HfSplit = None,
    hf_config: HfConfig = None,
    hf_revision: HfRevision = None,
) -> None:
    """Counts by source and kind, score distribution, lengths, and schema validation.

    Exit status: 0 when every row is valid; 1 when inspect read the data and found problems, each
    listed with its file and row (a row breaking the schema, a raw JSONL or Parquet file not yet
    converted by `uftdata unfold|score|feedback`, a mixture shard that differs from manifest.json);
    2 when PATH cannot be read at all (missing, empty, damaged, not Parquet, a broken .gz), with one
    error line.
    """
    from uftdata.inspect import format_inspect, inspect_and_plot

    report = inspect_and_plot(path, HubOptions(hf_split, hf_config, hf_revision), plot)
    print(format_inspect(report, as_json=as_json))
    if report["problems"]:
        raise typer.Exit(1)


@app.command()
def publish(
    mixture: Annotated[Path, typer.Argument(help="A mixture folder built by `uftdata mix`.")],
    repo: Annotated[str, typer.Option("--repo", help="Dataset repository ORG/NAME (created when missing).")],
    public: Annotated[bool, typer.Option("--public", help="Create the repository public (default: private). An existing repository keeps its visibility.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be uploaded and where; contacts nothing.")] = False,
    license: Annotated[str | None, typer.Option("--license", help="The card's license id (e.g. cc-by-4.0); default: the sources' license when they agree, else `other`.")] = None,
    preview: Annotated[Path | None, typer.Option("--preview", metavar="DIR", help="Also write the card (README.md) and score_histogram.png that are uploaded into DIR.")] = None,
) -> None:
    """Upload a mixture to the Hugging Face Hub: shards, manifest.json, and a card made from the manifest.

    The mixture is verified first (shard sha256s and the rows' content hash against manifest.json);
    files the repository already holds unchanged are not sent, and a repeated publish makes no commit.
    The token comes from HF_TOKEN or `hf auth login`; it is never printed or written.
    """
    from uftdata.publish import format_publish
    from uftdata.publish import publish as publish_mixture

    plan, commit_url = publish_mixture(mixture, repo, public=public, dry_run=dry_run, license=license, preview=preview)
    print(format_publish(mixture, plan, commit_url, public=public, dry_run=dry_run, preview=preview))


@app.command()
def export(
    mixture: Annotated[Path, typer.Argument(help="A mixture folder built by `uftdata mix` (its shards must match manifest.json).")],
    to: Annotated[str, typer.Option("--to", help="trl-sft, trl-dpo, trl-kto or llamafactory (see above).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder; written whole or not at all.")],
    kto_threshold: Annotated[float, typer.Option(help="trl-kto and llamafactory's kto files: label = score >= T (compared in float32); recorded in export.json.")] = 0.5,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it is an earlier export (never another folder).")] = False,
) -> None:
    """Export a mixture for TRL or LLaMA-Factory, in rank order; every row a target leaves out is counted by reason.

    \b
    Targets:
      trl-sft       sft rows only -> prompt, completion (TRL's conversational prompt-completion, SFTTrainer)
      trl-dpo       pairwise rows joined by pair_id -> prompt, chosen, rejected, score_chosen,
                    score_rejected (TRL's conversational preference layout, DPOTrainer)
      trl-kto       every row -> prompt, completion, label = score >= --kto-threshold, so sft rows
                    are desirable (TRL's unpaired preference layout, KTOTrainer)
      llamafactory  NAME_sft.jsonl, NAME_dpo.jsonl (ranking), NAME_kto.jsonl and NAME_*_test.jsonl:
                    sharegpt formatting with OpenAI role/content tags, listed in dataset_info.json
                    (use OUT as LLaMA-Factory's dataset_dir); prompts must alternate user/assistant

    TRL targets write OUT/data/{train,test}-00000-of-00001.parquet and a README.md, so
    datasets.load_dataset(OUT) reads the splits. Every target writes OUT/export.json: the source mixture
    and content hash, the threshold, and per file the examples written and the rows dropped by reason.
    """
    from uftdata.export import export_mixture, format_export

    summary = export_mixture(mixture, to, out, kto_threshold=kto_threshold, overwrite=overwrite)
    print(format_export(mixture, out, summary))


if __name__ == "__main__":
    main()
