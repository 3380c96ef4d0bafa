"""Schema rows from Python dicts, for the per-record adapters of `score` and `feedback`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import polars as pl

from uftdata import layouts, schema
from uftdata.accounting import Summary
from uftdata.errors import RecordError
from uftdata.ids import pair_ids, with_ids
from uftdata.inputs import InputFile, Progress
from uftdata.reader import first_record, iter_records
from uftdata.rejects import Rejects

BATCH_ROWS = 5_000
PAIRS_PER_RECORD = 1_000  # room for the pair numbers one record's rows may use

# Per-record input to `build_rows`; keys of each dict:
#   prompt: list[{role, content}], completion: {role: "assistant", content}, score: float,
#   kind: str, label: bool | None, pair: int | None (rows sharing it form one pair; the row with
#   label True is chosen), source_id: str, attributes: list[{name, value}] | None
Row = dict[str, object]


class Drop(Exception):
    """Raised by an adapter: the record is dropped and counted under `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Adapter = Callable[[dict, str, Counter[str]], list[Row]]
"""(record, where, notes) -> rows; raises Drop(reason) or RecordError. `notes` counts kept oddities."""

_INPUT_SCHEMA: dict[str, pl.DataType] = {
    "prompt": schema.POLARS_MESSAGES,
    "completion": schema.POLARS_MESSAGES,
    "score": pl.Float64(),
    "kind": pl.String(),
    "label": pl.Boolean(),
    "pair": pl.Int64(),
    "source_id": pl.String(),
    "attributes": schema.POLARS_SCHEMA["attributes"],
}


def build_rows(rows: list[Row], *, source: str) -> pl.DataFrame:
    """Rows in the schema: ids, groups, turns and pair ids computed (vectorized)."""
    frame = pl.DataFrame(
        [{**r, "completion": [r["completion"]]} for r in rows], schema=_INPUT_SCHEMA, orient="row"
    ) if rows else pl.DataFrame(schema=_INPUT_SCHEMA)
    # float64 -> float32 once, after the formula ran in float64 (docs/design.md, "Scores").
    frame = with_ids(frame.with_columns(pl.col("score").cast(pl.Float32), source=pl.lit(source)))
    turn = pl.col("prompt").list.eval(pl.element().struct.field("role") == "assistant").list.sum().cast(pl.Int32)
    frame = frame.with_columns(turn=turn)
    pairs = frame.filter(pl.col("pair").is_not_null())
    chosen = pairs.filter(pl.col("label")).select("pair", chosen="id")
    rejected = pairs.filter(~pl.col("label")).select("pair", rejected="id")
    joined = chosen.join(rejected, on="pair", how="inner", validate="1:1")
    joined = joined.with_columns(pair_id=pair_ids(joined["chosen"], joined["rejected"]))
    frame = frame.join(joined.select("pair", "pair_id"), on="pair", how="left", maintain_order="left")
    return frame.select(schema.COLUMNS)


def convert_files(
    files: list[InputFile],
    *,
    command: layouts.Command,
    fmt: str | None,
    source: str,
    adapter_for: Callable[[layouts.Layout], Adapter],
    rejects: Rejects,
    summary: Summary,
    progress: Progress | None = None,
) -> Iterator[pl.DataFrame]:
    """Run a per-record adapter over every record of every file, yielding blocks of schema rows."""
    for f in files:
        where, record = first_record(f, skip_bad=rejects.on_error == "skip")
        layout = layouts.resolve(command, fmt, record, where)
        adapter = adapter_for(layout)
        before = rejects.count
        batch: list[Row] = []
        for where, record in iter_records(f, rejects, progress):
            summary.records_in += 1
            try:
                rows = adapter(record, where, summary.notes)
            except Drop as drop:
                summary.drop(drop.reason)
                continue
            except RecordError as error:
                summary.records_in -= 1  # counted with the reader's rejects below
                rejects.reject(error, record)
                continue
            summary.records_used += 1
            for row in rows:  # pair numbers are per record; make them unique within the file
                if isinstance(pair := row.get("pair"), int):  # None: not part of a pair
                    row["pair"] = summary.records_in * PAIRS_PER_RECORD + pair
            batch.extend(rows)
            if len(batch) >= BATCH_ROWS:
                yield _finish(build_rows(batch, source=source), summary)
                batch = []
        if batch:
            yield _finish(build_rows(batch, source=source), summary)
        summary.records_in += rejects.count - before
        summary.drop("invalid_record", rejects.count - before)
        summary.inputs.append({"file": f.name, "layout": layout.name, **f.provenance()})


def _finish(frame: pl.DataFrame, summary: Summary) -> pl.DataFrame:
    summary.rows_out += frame.height
    return frame
