"""`uftdata feedback`: pairwise and binary feedback -> `pairwise` rows (two per pair) and `binary` rows.

One adapter per source layout, each `(record, where, notes) -> rows` for `rows.convert_files`:
- pairwise: `prompt` (a string = one user message, or a message list ending with a user message)
  + `chosen`/`rejected` (a string, an assistant message, or a list holding exactly that message);
- pairwise_conversation (UltraFeedback binarized): `chosen`/`rejected` are whole conversations;
  each side's prompt is everything before its final assistant message;
- hh_rlhf: `chosen`/`rejected` transcripts, split into messages on the Human:/Assistant: markers
  first, then read like whole conversations;
- helpsteer2_preference: `preference_strength` -3..3; negative: response_1 chosen, positive:
  response_2 chosen; `attributes` = [preference_strength];
- binary (TRL KTO) / binary_messages (LLaMA-Factory KTO): one row, score 1.0 if `label` else 0.0.
A pair is two rows with one local `pair` number (build_rows gives them one pair_id), chosen first.
Scores: chosen 1.0, rejected 0.0; with `score_chosen`/`score_rejected` in the record (UltraFeedback
binarized) and `ratings` on, `(s - lo) / (hi - lo)` over `rating_scale`, attributes = [rating].
Rated pairs keep the source's label; equal ratings are counted in `notes[tie]`, a chosen response
rated below the rejected one in `notes[chosen_rated_lower]`.

Dropped (counted under the reason; the record is a valid one that gives no usable row):
`empty_completion` (whitespace only), `prompt_mismatch` (chosen and rejected prompts differ as whole
messages), `identical_pair` (same completion text), `tie` (preference_strength 0), `other_split`
(--split), `missing_rating` (a rating null or "N/A", as UltraFeedback marks unrated responses).
A RecordError (the record is not in its layout; --on-error skip sends it to the rejects file): a
field of the wrong type, a prompt that is empty, has an unknown role or does not end with a user
message, a completion that is not one assistant message, a rating outside `rating_scale`, a
preference_strength that is not an int in -3..3, a label that is not a bool.

hh-rlhf transcripts: text that is not a transcript is an error; a transcript whose turns give no
usable pair is a drop, because such records occur in the published files and a full run should not
stop on them:
- text before the first "\\n\\nHuman:" or no marker at all: RecordError (not a transcript);
- an empty final Assistant turn (harmless-base test, line 87 of the sample): `empty_completion`;
- ending with a Human turn (a conversation cut before the answer): `trailing_user_turn`;
- starting with an Assistant turn: `starts_with_assistant` (the prompt would hold no user message);
- two Human or two Assistant turns in a row (e.g. a marker inside a message): `consecutive_same_role`,
  as in unfold: chat templates that require alternating roles (Mistral's) refuse such prompts.
The names match unfold's reasons for the same shapes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from itertools import pairwise

import polars as pl

from uftdata.accounting import Summary
from uftdata.conversation import (
    Message,
    as_messages,
    split_helpsteer2_prompt,
    split_hh_transcript,
    split_last_assistant,
)
from uftdata.errors import RecordError, UftDataError
from uftdata.fields import (
    MISSING_RATINGS,
    prompt_messages,
    rating,
    rescale,
    response_message,
    source_id_from,
    string_field,
)
from uftdata.layouts import Layout
from uftdata.pairs import pairs_from_scores
from uftdata.reader import InputFile, Progress
from uftdata.rejects import Rejects
from uftdata.rowcommand import Produce, convert_inputs
from uftdata.rows import Adapter, Drop, Row

__all__ = ["FeedbackOptions", "adapter_for", "feedback_inputs", "pairs_from_scores"]

RATING_FIELDS = ("score_chosen", "score_rejected")
PREFERENCE_STRENGTHS = range(-3, 4)

Side = tuple[list[Message], Message]  # (prompt, completion) of one response


@dataclass(frozen=True)
class FeedbackOptions:
    """How `uftdata feedback` reads its inputs (the command's options)."""

    ratings: bool = True
    """Carry ratings (`score_chosen`/`score_rejected`) into the scores when the layout has them."""
    rating_scale: tuple[float, float] = (1.0, 10.0)
    """MIN, MAX of the carried ratings; score = (s - MIN) / (MAX - MIN); a rating outside is an error."""
    split: str | None = None
    """helpsteer2_preference: keep only records of this split (the others are dropped as `other_split`)."""

    def __post_init__(self) -> None:
        lo, hi = self.rating_scale
        if not lo < hi:
            raise UftDataError("--rating-scale", "needs MIN < MAX", got=f"{lo:g}:{hi:g}", expected="e.g. 1:10")


# ---------------------------------------------------------------------------------------------
# Rows


def pair_rows(chosen: Side, rejected: Side, where: str, notes: Counter[str], *,
              ratings: tuple[float, float] | None, options: FeedbackOptions,
              attributes: list[dict[str, object]] | None = None) -> list[Row]:
    """The two rows of one pair (chosen first), after the drops every pair layout shares."""
    if not chosen[1]["content"].strip() or not rejected[1]["content"].strip():
        raise Drop("empty_completion")
    if chosen[0] != rejected[0]:  # lists of whole messages: never a character prefix
        raise Drop("prompt_mismatch")
    if chosen[1]["content"] == rejected[1]["content"]:
        raise Drop("identical_pair")
    scores: tuple[float, float] = (1.0, 0.0)
    sides_attributes = (attributes, attributes)
    if ratings is not None:
        scores = (rescale(ratings[0], *options.rating_scale), rescale(ratings[1], *options.rating_scale))
        sides_attributes = ([{"name": "rating", "value": ratings[0]}], [{"name": "rating", "value": ratings[1]}])
        if ratings[0] == ratings[1]:
            notes["tie"] += 1
        elif ratings[0] < ratings[1]:
            notes["chosen_rated_lower"] += 1
    return [
        {"prompt": side[0], "completion": side[1], "score": score, "kind": "pairwise", "label": label, "pair": 0,
         "source_id": source_id_from(where), "attributes": attrs}
        for side, score, label, attrs in zip((chosen, rejected), scores, (True, False), sides_attributes, strict=True)
    ]


def binary_row(prompt: list[Message], completion: Message, label: bool, where: str) -> Row:
    if not completion["content"].strip():
        raise Drop("empty_completion")
    return {"prompt": prompt, "completion": completion, "score": 1.0 if label else 0.0, "kind": "binary",
            "label": label, "pair": None, "source_id": source_id_from(where), "attributes": None}


# ---------------------------------------------------------------------------------------------
# Field readers (each names the field it rejects)


def read_ratings(record: dict, where: str, options: FeedbackOptions) -> tuple[float, float] | None:
    """(chosen, rejected) ratings in the scale, or None when ratings are off or the record has none."""
    if not options.ratings or not any(name in record for name in RATING_FIELDS):
        return None
    values = [record.get(name) for name in RATING_FIELDS]
    if any(value in MISSING_RATINGS for value in values):
        raise Drop("missing_rating")
    lo, hi = options.rating_scale
    chosen, rejected = (rating(value, where, name, lo, hi) for value, name in zip(values, RATING_FIELDS, strict=True))
    return chosen, rejected


def conversation_side(value: object, where: str, field: str) -> Side:
    """A whole conversation: (messages before the final assistant message, that message)."""
    if not isinstance(value, list):
        raise RecordError(where, field, "is not a list of messages", got=type(value).__name__,
                          expected="[user, assistant, ...] ending with the rated assistant message")
    prompt, completion = split_last_assistant(as_messages(value, where, field, role="user"), where, field)
    return prompt_messages(prompt, where, field), completion


def hh_side(value: object, where: str, field: str) -> Side:
    """An hh-rlhf transcript as (prompt, completion); see the module docstring for the odd shapes."""
    text = string_field(value, where, field)
    messages = split_hh_transcript(text, where, field)
    if not messages:
        raise RecordError(where, field, "holds no '\\n\\nHuman:' / '\\n\\nAssistant:' turns", got=text[:40])
    roles = [m["role"] for m in messages]
    if roles[0] != "user":
        raise Drop("starts_with_assistant")
    if roles[-1] != "assistant":
        raise Drop("trailing_user_turn")
    if any(a == b for a, b in pairwise(roles)):
        raise Drop("consecutive_same_role")
    return messages[:-1], messages[-1]


def read_label(record: dict, where: str) -> bool:
    label = record.get("label")
    if not isinstance(label, bool):  # "true", 1 or null would silently pick a side
        raise RecordError(where, "label", "is not a boolean", got=label, expected="true or false")
    return label


def read_strength(record: dict, where: str) -> int:
    strength = record.get("preference_strength")
    if isinstance(strength, bool) or not isinstance(strength, int) or strength not in PREFERENCE_STRENGTHS:
        raise RecordError(where, "preference_strength", "is not an integer in -3..3", got=strength,
                          expected="-3..-1 (response_1 better), 0 (tie) or 1..3 (response_2 better)")
    return strength


# ---------------------------------------------------------------------------------------------
# Adapters


def pairwise_rows(record: dict, where: str, notes: Counter[str], *, options: FeedbackOptions) -> list[Row]:
    """Explicit prompt + chosen/rejected completions."""
    prompt = prompt_messages(record.get("prompt"), where, "prompt")
    chosen, rejected = (response_message(record.get(name), where, name) for name in ("chosen", "rejected"))
    ratings = read_ratings(record, where, options)
    return pair_rows((prompt, chosen), (prompt, rejected), where, notes, ratings=ratings, options=options)


def conversation_pair_rows(record: dict, where: str, notes: Counter[str], *, options: FeedbackOptions,
                           read_side: Callable[[object, str, str], Side]) -> list[Row]:
    """Whole conversations (pairwise_conversation) or transcripts (hh_rlhf): the prompt is implicit."""
    chosen, rejected = (read_side(record.get(name), where, name) for name in ("chosen", "rejected"))
    ratings = read_ratings(record, where, options)
    return pair_rows(chosen, rejected, where, notes, ratings=ratings, options=options)


def helpsteer2_preference_rows(record: dict, where: str, notes: Counter[str], *,
                               options: FeedbackOptions) -> list[Row]:
    """HelpSteer2 preference: the sign of preference_strength picks the chosen response."""
    if options.split is not None and string_field(record.get("split"), where, "split") != options.split:
        raise Drop("other_split")  # before any other check: records of other splits are not ours to judge
    strength = read_strength(record, where)
    text = string_field(record.get("prompt"), where, "prompt")
    prompt = prompt_messages(split_helpsteer2_prompt(text), where, "prompt")
    responses = [response_message(string_field(record.get(name), where, name), where, name)
                 for name in ("response_1", "response_2")]
    if strength == 0:
        raise Drop("tie")
    chosen, rejected = responses if strength < 0 else responses[::-1]
    attributes: list[dict[str, object]] = [{"name": "preference_strength", "value": float(strength)}]
    return pair_rows((prompt, chosen), (prompt, rejected), where, notes, ratings=None, options=options,
                     attributes=attributes)


def binary_rows(record: dict, where: str, notes: Counter[str]) -> list[Row]:
    """TRL KTO layout: prompt (string or messages) + completion (string, message or [message]) + label."""
    label = read_label(record, where)
    prompt = prompt_messages(record.get("prompt"), where, "prompt")
    completion = response_message(record.get("completion"), where, "completion")
    return [binary_row(prompt, completion, label, where)]


def binary_messages_rows(record: dict, where: str, notes: Counter[str]) -> list[Row]:
    """LLaMA-Factory KTO layout: messages whose last one is the rated assistant response + label."""
    label = read_label(record, where)
    prompt, completion = conversation_side(record.get("messages"), where, "messages")
    return [binary_row(prompt, completion, label, where)]


def adapter_for(layout: Layout, options: FeedbackOptions) -> Adapter:
    """The per-record adapter for a feedback layout."""
    adapters: dict[str, Adapter] = {
        "pairwise": partial(pairwise_rows, options=options),
        "pairwise_conversation": partial(conversation_pair_rows, options=options, read_side=conversation_side),
        "hh_rlhf": partial(conversation_pair_rows, options=options, read_side=hh_side),
        "helpsteer2_preference": partial(helpsteer2_preference_rows, options=options),
        "binary": binary_rows,
        "binary_messages": binary_messages_rows,
    }
    if layout.name == "uft":
        raise UftDataError("--format uft", "rows in the uft schema are read only with --pairs-from-scores",
                           fix="Add --pairs-from-scores.")
    if layout.name not in adapters:
        raise UftDataError("--format", "is not a layout `uftdata feedback` reads", got=layout.name,
                           expected=", ".join(adapters))
    return adapters[layout.name]


def feedback_inputs(inputs: list[str], fmt: str | None, source: str | None, options: FeedbackOptions, *,
                    from_scores: bool = False) -> Produce:
    """`uftdata feedback`'s rows (for rowcommand.run_rows_command): every input through its layout's
    adapter under its source name; `from_scores`: pairs from all the inputs' score rows at once
    (a prompt's rows may span files), keeping the rows' own source unless `source` is given."""
    if not from_scores:
        return convert_inputs("feedback", inputs, fmt, source, partial(adapter_for, options=options))

    def produce(files: list[InputFile], rejects: Rejects, summary: Summary, progress: Progress) -> Iterator[pl.DataFrame]:
        return pairs_from_scores(files, source=source, rejects=rejects, summary=summary, progress=progress)

    return produce
