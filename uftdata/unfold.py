"""`uftdata unfold`: conversations -> one `sft` row per assistant turn (score 1.0).

Rules (README, "unfold rules"). A conversation is read message by message; the first message that
breaks the expected shape ends the usable part of the conversation:
- `empty_message`: content empty or whitespace only;
- `unknown_role`: a role other than system/user/assistant (after ShareGPT's names are mapped);
- `misplaced_system`: a system message anywhere but first;
- `starts_with_assistant`: the first non-system message is from the assistant;
- `consecutive_same_role`: two user or two assistant messages in a row.
Assistant turns before that message become rows; it and every later assistant turn are counted in
`turns_dropped[reason]`. A conversation that yields no row is a dropped record, under its first
problem's reason or `no_assistant_turn`. A trailing user message (no answer) is not a turn: the
conversation is used and `notes[trailing_user_turn]` counts it.
The work is columnar (polars) per block of the input, so memory stays flat as inputs grow.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from uftdata import layouts, schema
from uftdata.accounting import Summary
from uftdata.ids import first_user_content, hex_digests, message_texts, turn_text
from uftdata.reader import LINE, InputFile, Progress, first_record, iter_frames
from uftdata.rejects import Rejects
from uftdata.rowcommand import Produce, source_runs

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}
ID_FIELDS = ("id", "prompt_id", "conversation_id")

_TEXT_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_SHAREGPT_MESSAGE = pa.struct([("from", pa.string()), ("value", pa.string())])
_MESSAGE_FIELD = {
    "ultrachat": ("data", pa.list_(pa.string())),
    "sharegpt": ("conversations", pa.list_(_SHAREGPT_MESSAGE)),
    "messages": ("messages", pa.list_(_TEXT_MESSAGE)),
}


def read_schema(layout: str, record: dict) -> tuple[pa.Schema, str | None]:
    """The Arrow schema to parse a layout with, and the record-id field it carries (if any)."""
    field = pa.field(*_MESSAGE_FIELD[layout])
    id_field = next((name for name in ID_FIELDS if name in record), None)
    if id_field is None:
        return pa.schema([field]), None
    id_type = pa.int64() if isinstance(record[id_field], int) else pa.string()
    return pa.schema([field, pa.field(id_field, id_type)]), id_field


def to_messages(frame: pl.DataFrame, layout: str, id_field: str | None, where: str) -> pl.DataFrame:
    """Layout adapter: any conversation layout -> `messages`, `record_id`, `_line`."""
    element = pl.element()
    if layout == "ultrachat":  # roles are implied by position: user first, then alternating
        role = pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
        messages = pl.col("data").list.eval(pl.struct(role=role, content=element))
    elif layout == "sharegpt":
        speaker = element.struct.field("from")
        role = speaker.str.to_lowercase().replace_strict(SHAREGPT_ROLES, default=speaker)
        messages = pl.col("conversations").list.eval(pl.struct(role=role, content=element.struct.field("value")))
    else:
        messages = pl.col("messages")
    record_id = pl.col(id_field).cast(pl.String) if id_field else pl.lit(None, dtype=pl.String)
    fallback = pl.format("{}:{}", pl.lit(where), pl.col(LINE))
    return frame.select(messages.alias("messages"), pl.coalesce(record_id, fallback).alias("record_id"), LINE)


def _first_problem(role: pl.Expr, content: pl.Expr, pos: pl.Expr, has_system: pl.Expr) -> pl.Expr:
    j = pos - has_system.cast(pl.Int64)  # position among non-system messages
    expected = pl.when(j % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
    return (
        pl.when(content.is_null() | (content.str.strip_chars() == "")).then(pl.lit("empty_message"))
        .when(role.is_null() | ~role.is_in(schema.ROLES)).then(pl.lit("unknown_role"))
        .when((role == "system") & (pos > 0)).then(pl.lit("misplaced_system"))
        .when((role != "system") & (role != expected) & (j == 0)).then(pl.lit("starts_with_assistant"))
        .when((role != "system") & (role != expected)).then(pl.lit("consecutive_same_role"))
    )


def unfold_frame(conv: pl.DataFrame, *, source: str) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """Rows in the schema for one block of conversations, and the block's counts.

    `conv` has `messages`, `record_id`; the counts are frames: `records_dropped` (reason, n),
    `turns_dropped` (reason, n), `trailing_user` (n), `turns_in` (n).
    """
    conv = conv.with_row_index("conv")
    msgs = (
        conv.select("conv", "messages", pos=pl.int_ranges(pl.col("messages").list.len()))
        .explode(["messages", "pos"])
        .drop_nulls("pos")
        .select("conv", "pos", msg="messages")
    )
    role, content = pl.col("msg").struct.field("role"), pl.col("msg").struct.field("content")
    has_system = (pl.col("pos") == 0).and_(role == "system").any().over("conv")
    msgs = msgs.with_columns(problem=_first_problem(role, content, pl.col("pos"), has_system), role=role,
                             has_system=has_system.cast(pl.Int64))
    first_bad = pl.col("pos").filter(pl.col("problem").is_not_null()).min().over("conv")
    msgs = msgs.with_columns(
        cut=first_bad.fill_null(pl.col("pos").max().over("conv") + 1),
        reason=pl.col("problem").filter(pl.col("pos") == first_bad).first().over("conv"),
        n_msgs=pl.len().over("conv"),
    )
    assistant = msgs.filter(pl.col("role") == "assistant")
    kept = assistant.filter(pl.col("pos") < pl.col("cut"))
    lost = assistant.filter(pl.col("pos") >= pl.col("cut"))

    counts = _block_counts(conv, msgs, assistant, kept, lost)
    # Per conversation, once: each message's canonical piece and the group (first user message).
    per_conv = conv.select(texts=message_texts(pl.col("messages")), group=first_user_content(pl.col("messages")))
    per_conv = per_conv.with_columns(group=hex_digests(per_conv["group"]))
    parents = pl.concat([conv.select("messages", "record_id"), per_conv], how="horizontal")[kept["conv"]]
    rows = pl.concat([parents, kept.select("pos", "msg", "has_system")], how="horizontal").select(
        prompt=pl.col("messages").list.slice(0, pl.col("pos")),
        completion=pl.concat_list(pl.col("msg")),
        record_id=pl.col("record_id"),
        group=pl.col("group"),
        id=turn_text(pl.col("texts"), pl.col("pos")),
        # The prompt is a valid alternating prefix, so the assistant messages in it are:
        turn=((pl.col("pos") - pl.col("has_system")) // 2).cast(pl.Int32),
    )
    rows = rows.with_columns(id=hex_digests(rows["id"])).with_columns(
        score=pl.lit(1.0, dtype=pl.Float32),
        kind=pl.lit("sft"),
        label=pl.lit(None, dtype=pl.Boolean),
        pair_id=pl.lit(None, dtype=pl.String),
        source=pl.lit(source),
        source_id=pl.format("{}#{}", pl.col("record_id"), pl.col("turn")),
        attributes=pl.lit(None, dtype=schema.POLARS_SCHEMA["attributes"]),
    )
    return rows, counts


def _block_counts(conv: pl.DataFrame, msgs: pl.DataFrame, assistant: pl.DataFrame, kept: pl.DataFrame,
                  lost: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """`unfold_frame`'s counts: assistant turns in and dropped, trailing user turns, records dropped."""
    used = kept.select(pl.col("conv").unique())
    trailing = msgs.filter(
        (pl.col("pos") == pl.col("n_msgs") - 1) & (pl.col("role") == "user") & (pl.col("pos") < pl.col("cut"))
    ).join(used, on="conv", how="semi")  # only in conversations that give rows: the others are dropped
    unused = conv.select("conv").join(used, on="conv", how="anti")
    reasons = msgs.group_by("conv").agg(pl.col("reason").first())
    return {
        "turns_in": pl.DataFrame({"n": [assistant.height]}),
        "turns_dropped": lost.group_by("reason").agg(n=pl.len()),
        "trailing_user": pl.DataFrame({"n": [trailing.height]}),
        "records_dropped": (
            unused.join(reasons, on="conv", how="left")
            .select(reason=pl.col("reason").fill_null("no_assistant_turn"))
            .group_by("reason").agg(n=pl.len())
        ),
    }


def unfold_file(
    f: InputFile, *, fmt: str | None, source: str, rejects: Rejects, summary: Summary, progress: Progress | None
) -> Iterator[pl.DataFrame]:
    """Unfolded row blocks for one input file; counts go into `summary`."""
    where, record = first_record(f, skip_bad=rejects.on_error == "skip")
    layout = layouts.resolve("unfold", fmt, record, where)
    read_as, id_field = read_schema(layout.name, record)
    message_field = read_as.names[0]
    before = rejects.count
    for frame in iter_frames(f, read_as, [message_field], rejects, progress):
        conv = to_messages(frame, layout.name, id_field, f.name)
        rows, counts = unfold_frame(conv, source=source)
        summary.records_in += conv.height
        dropped = int(counts["records_dropped"]["n"].sum())
        summary.records_used += conv.height - dropped
        for reason, n in counts["records_dropped"].iter_rows():
            summary.drop(reason, n)
        for reason, n in counts["turns_dropped"].iter_rows():
            summary.turns_dropped[reason] += n
        summary.notes["trailing_user_turn"] += int(counts["trailing_user"]["n"][0])
        summary.notes["assistant_turns_in"] += int(counts["turns_in"]["n"][0])
        summary.rows_out += rows.height
        yield rows
    summary.records_in += rejects.count - before
    summary.drop("invalid_record", rejects.count - before)
    summary.inputs.append({"file": f.name, "layout": layout.name, **f.provenance()})


def unfold_inputs(inputs: list[str], fmt: str | None, source: str | None) -> Produce:
    """`uftdata unfold`'s rows (for rowcommand.run_rows_command): every input file unfolded under
    its source name."""

    def produce(files: list[InputFile], rejects: Rejects, summary: Summary, progress: Progress) -> Iterator[pl.DataFrame]:
        for name, named in source_runs(source, inputs, files):
            for f in named:
                yield from unfold_file(f, fmt=fmt, source=name, rejects=rejects, summary=summary, progress=progress)

    return produce
