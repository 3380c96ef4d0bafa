"""Turning the text forms sources use into message lists (`[{"role", "content"}, ...]`)."""

from __future__ import annotations

import re

from uftdata.errors import RecordError

Message = dict[str, str]

_HS2_MARKER = re.compile(r"\n<extra_id_1>(User|Assistant)\n")
_HH_MARKER = re.compile(r"\n\n(Human|Assistant): ?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def split_helpsteer2_prompt(text: str) -> list[Message]:
    """A HelpSteer2 prompt: the first user turn, then earlier turns joined with
    `\\n<extra_id_1>Assistant\\n` / `\\n<extra_id_1>User\\n`; the last message is a user message."""
    parts = _HS2_MARKER.split(text)
    messages = [{"role": "user", "content": parts[0]}]
    for marker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if marker == "User" else "assistant", "content": content})
    return messages


def split_hh_transcript(text: str, where: str, field: str) -> list[Message]:
    """An hh-rlhf transcript `\\n\\nHuman: ...\\n\\nAssistant: ...` as messages, split on the markers
    first so prompts are compared as whole messages, never as character prefixes."""
    parts = _HH_MARKER.split(text)
    if parts[0].strip():
        raise RecordError(where, field, "does not start with '\\n\\nHuman:'", got=parts[0][:40])
    return [{"role": _HH_ROLES[m], "content": c} for m, c in zip(parts[1::2], parts[2::2])]


def as_messages(value: object, where: str, field: str, *, role: str) -> list[Message]:
    """A string (one message of `role`) or a list of {role, content} dicts, checked."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list):
        raise RecordError(where, field, "is neither a string nor a list of messages", got=type(value).__name__)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError(where, f"{field}[{i}]", "is not a {role, content} message with string values", got=m)
        out.append({"role": m["role"], "content": m["content"]})
    return out


def split_last_assistant(messages: list[Message], where: str, field: str) -> tuple[list[Message], Message]:
    """(prompt, completion) of a conversation whose last message is the rated assistant response."""
    if not messages or messages[-1]["role"] != "assistant":
        raise RecordError(where, field, "does not end with an assistant message",
                          got=messages[-1]["role"] if messages else "[]")
    return messages[:-1], messages[-1]
