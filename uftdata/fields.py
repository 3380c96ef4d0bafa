"""Reading one field of a source record, each reader naming the field it rejects.

Shared by the per-record adapters of `score` and `feedback`.
"""

from __future__ import annotations

import math

from uftdata.conversation import Message, as_messages
from uftdata.errors import RecordError
from uftdata.schema import ROLES

MISSING_RATINGS = ("N/A", None)  # how UltraFeedback marks a completion its annotator did not rate


def source_id_from(where: str) -> str:
    """A reader position as `source_id`: "helpsteer2.jsonl: line 3" -> "helpsteer2.jsonl:3"."""
    name, _, position = where.rpartition(": ")
    return f"{name}:{position.rsplit(' ', 1)[-1]}"


def rescale(value: float, lo: float, hi: float) -> float:
    """`value` on [lo, hi] mapped linearly to [0, 1] (not clipped)."""
    return (value - lo) / (hi - lo)


def rating(value: object, where: str, field: str, lo: float, hi: float) -> float:
    """A number in [lo, hi] (bools are not ratings, though Python counts them as ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(where, field, "is not a number", got=value, expected=f"a rating in {lo:g}-{hi:g}")
    if not lo <= value <= hi:
        raise RecordError(where, field, "is outside the rating range", got=value, expected=f"a rating in {lo:g}-{hi:g}")
    return float(value)


def mean_rating(value: object, where: str, field: str, lo: float, hi: float) -> float:
    """The mean of a per-annotator list of ratings (HelpSteer2 disagreements)."""
    if not isinstance(value, list) or not value:
        raise RecordError(where, field, "is not a non-empty list of ratings", got=value)
    return math.fsum(rating(v, where, f"{field}[{i}]", lo, hi) for i, v in enumerate(value)) / len(value)


def string_field(value: object, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise RecordError(where, field, "is missing or not a string", got=value)
    return value


def prompt_messages(value: object, where: str, field: str) -> list[Message]:
    """A string (one user message) or a message list; either way it must end with a user message."""
    messages = as_messages(value, where, field, role="user")
    bad_role = next((m["role"] for m in messages if m["role"] not in ROLES), None)
    if bad_role is not None:
        raise RecordError(where, field, "has an unknown role", got=bad_role, expected=", ".join(ROLES))
    if not messages or messages[-1]["role"] != "user":
        raise RecordError(where, field, "does not end with a user message",
                          got=messages[-1]["role"] if messages else "[]")
    return messages


def response_message(value: object, where: str, field: str) -> Message:
    """A string, an assistant message, or a one-element list holding one."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    messages = as_messages(value if isinstance(value, list) else [value], where, field, role="assistant")
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise RecordError(where, field, "is not one assistant message", got=value)
    return messages[0]
