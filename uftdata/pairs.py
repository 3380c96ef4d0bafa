"""`uftdata feedback --pairs-from-scores`: `score` rows -> one pair per prompt (docs/design.md, "Scores").

The authors' data for the DPO/KTO baselines: of the responses to one prompt, the highest-scored is
chosen and the lowest-scored rejected; scores, ids and attributes are kept, `label` and `pair_id` set.
- Rows are grouped by (`source`, the whole `prompt`), not by `group`: `group` hashes only the first
  user message, so two multi-turn conversations that open alike share it, and a pair must share its
  prompt. `source` is in the key because scores from different rating schemes are not comparable.
- Ties among the highest (or lowest) scores go to the smallest `id`, so the result does not depend on
  input order; exact duplicate rows (same id and score) go to the first read.
- Every input row is accounted for (records_in = rows read): used (2 per pair) or dropped as
  `not_score_row` (kind other than score), `single_response` (its prompt has one row), `tie` (every
  score of the prompt equal: all its rows), `identical_pair` (the extremes are the same response,
  rated twice) or `not_extreme` (neither chosen nor rejected).
Output rows are ordered by pair_id, chosen first.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from uftdata import schema
from uftdata.accounting import Summary
from uftdata.errors import UftDataError
from uftdata.ids import hex_digests, message_text, pair_ids
from uftdata.inputs import InputFile, Progress
from uftdata.reader import LINE, iter_frames
from uftdata.rejects import Rejects

KEY = ("source", "_prompt")
ROW = "_row"  # position in the concatenated input, to pick one of exact duplicates


def pairs_from_scores(
    files: list[InputFile],
    *,
    source: str | None,
    rejects: Rejects,
    summary: Summary,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """Pairwise rows from score rows; `source` (if given) replaces the rows' own source on output.

    Groups may span files (e.g. shards of one `uftdata score` run), so all rows are read first;
    score outputs are small next to unfolded SFT data.
    """
    frames = [read_score_file(f, rejects, summary, progress) for f in files]
    rows = pl.concat(frames).with_row_index(ROW)
    marked = mark_pairs(rows)
    outcomes = marked["_outcome"].value_counts()
    for outcome, n in outcomes.iter_rows():
        if outcome not in ("chosen", "rejected"):
            summary.drop(outcome, n)
    pairs = to_pairs(marked)
    if source is not None:
        pairs = pairs.with_columns(source=pl.lit(source))
    summary.records_used += pairs.height
    summary.rows_out += pairs.height
    yield pairs


def read_score_file(f: InputFile, rejects: Rejects, summary: Summary, progress: Progress | None) -> pl.DataFrame:
    """The file's score rows with a prompt key; the file is checked against the schema first."""
    if f.container != "parquet":
        raise UftDataError(f.name, "--pairs-from-scores reads Parquet rows in the uft schema", got=f.container,
                           fix="Pass the output of `uftdata score IN -o OUT.parquet`.")
    problems = schema.schema_problems(arrow_schema(f))
    if problems:
        raise UftDataError(f.name, "; ".join(problems), expected="the uft row schema",
                           fix="Pass the output of `uftdata score IN -o OUT.parquet`.")
    frame = pl.concat(list(iter_frames(f, schema.SCHEMA, (), rejects, progress)))
    check_rows(f, frame)
    summary.records_in += frame.height
    score_rows = frame.filter(pl.col("kind") == "score")
    summary.drop("not_score_row", frame.height - score_rows.height)
    summary.inputs.append({"file": f.name, "layout": "uft", **f.provenance()})
    prompt_text = score_rows.select(message_text(pl.col("prompt"))).to_series()
    return score_rows.select(schema.COLUMNS).with_columns(hex_digests(prompt_text).alias("_prompt"))


def arrow_schema(f: InputFile) -> pa.Schema:
    return f.parquet().schema_arrow  # gzipped or damaged files too: one line naming the file


def check_rows(f: InputFile, frame: pl.DataFrame) -> None:
    """The first value that breaks the schema, as an error naming file, row and field."""
    problems = schema.row_problems(frame)
    if problems.height:
        row, field, problem = problems.row(0)
        raise UftDataError(f"{f.where(frame[LINE][row])}: field {field!r}", problem,
                           fix=f"{problems.height} problem(s) in all; `uftdata inspect {f.name}` lists them.")


def mark_pairs(rows: pl.DataFrame) -> pl.DataFrame:
    """Add `_outcome`: chosen, rejected, or the drop reason; and `_chosen`/`_rejected`, the pair's ids."""
    key = list(KEY)
    score, row_id, row = pl.col("score"), pl.col("id"), pl.col(ROW)
    top, bottom = score == score.max(), score == score.min()
    # Within each prompt: the extremes' smallest ids, then one row of each (duplicates share an id).
    rows = rows.with_columns(
        _chosen=row_id.filter(top).min().over(key),
        _rejected=row_id.filter(bottom).min().over(key),
        _n=pl.len().over(key),
        _spread=(score.max() - score.min()).over(key),
    )
    rows = rows.with_columns(
        _chosen_row=row.filter(top & (row_id == pl.col("_chosen"))).min().over(key),
        _rejected_row=row.filter(bottom & (row_id == pl.col("_rejected"))).min().over(key),
    )
    is_chosen, is_rejected = row == pl.col("_chosen_row"), row == pl.col("_rejected_row")
    outcome = (
        pl.when(pl.col("_n") == 1).then(pl.lit("single_response"))
        .when(pl.col("_spread") == 0).then(pl.lit("tie"))
        .when((pl.col("_chosen") == pl.col("_rejected")) & (is_chosen | is_rejected)).then(pl.lit("identical_pair"))
        .when(is_chosen).then(pl.lit("chosen"))
        .when(is_rejected).then(pl.lit("rejected"))
        .otherwise(pl.lit("not_extreme"))
    )
    return rows.with_columns(_outcome=outcome)


def to_pairs(marked: pl.DataFrame) -> pl.DataFrame:
    """The chosen and rejected rows as pairwise rows in the schema, ordered by pair_id, chosen first."""
    kept = marked.filter(pl.col("_outcome").is_in(["chosen", "rejected"]))
    kept = kept.with_columns(
        pair_id=pair_ids(kept["_chosen"], kept["_rejected"]),
        label=pl.col("_outcome") == "chosen",
        kind=pl.lit("pairwise"),
    )
    return kept.sort(["pair_id", "label"], descending=[False, True]).select(schema.COLUMNS)
