"""Source layouts and their detection (docs/design.md, "Reading sources").

Detection looks at the first record's keys (and, where two layouts share keys, the type of a
value) and tries the steps in DESIGN's order: chosen+rejected, response_1+response_2, label,
rating columns, `data`, `conversations`, `messages`. The first step with a match wins; two matches
in one step stop the command and ask for `--format`. A file whose layout belongs to another command
is refused with the command that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeGuard

from uftdata.errors import UftDataError

Command = Literal["unfold", "score", "feedback"]


def _is_messages(value: object) -> TypeGuard[list[dict]]:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _has_user(value: object) -> bool:
    return _is_messages(value) and any(m.get("role") == "user" for m in value)


@dataclass(frozen=True)
class Layout:
    name: str
    command: Command
    step: int
    keys: tuple[str, ...]
    description: str
    matches: Callable[[dict], bool] = lambda record: True
    detected: bool = True  # False: only chosen with --format (or an option such as --score-column)


LAYOUTS: tuple[Layout, ...] = (
    Layout("uft", "feedback", -1, ("id", "prompt", "completion", "score", "kind", "group"),
           "rows already in the uft schema (e.g. `uftdata score` output, for --pairs-from-scores)"),
    Layout("pairwise", "feedback", 0, ("prompt", "chosen", "rejected"),
           "explicit prompt + chosen/rejected completions (strings or message lists)",
           lambda r: not _has_user(r["chosen"])),
    Layout("pairwise_conversation", "feedback", 0, ("chosen", "rejected"),
           "chosen/rejected whole conversations, prompt implicit (UltraFeedback binarized)",
           lambda r: _has_user(r["chosen"])),
    Layout("hh_rlhf", "feedback", 0, ("chosen", "rejected"),
           "chosen/rejected '\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts (Anthropic hh-rlhf)",
           lambda r: isinstance(r["chosen"], str) and "prompt" not in r),
    Layout("helpsteer2_preference", "feedback", 1, ("prompt", "response_1", "response_2", "preference_strength"),
           "HelpSteer2 preference file, preference_strength -3..3 (negative: response_1 better)"),
    Layout("binary", "feedback", 2, ("prompt", "completion", "label"),
           "binary feedback: prompt/completion (strings or message lists) + label (TRL KTO layout)"),
    Layout("binary_messages", "feedback", 2, ("messages", "label"),
           "binary feedback: messages whose last one is the rated completion + label (LLaMA-Factory KTO)"),
    Layout("helpsteer2", "score", 3, ("prompt", "response", "helpfulness", "correctness", "coherence"),
           "HelpSteer / HelpSteer2 ratings 0-4 per attribute",
           lambda r: not isinstance(r["helpfulness"], list)),
    Layout("helpsteer2_disagreements", "score", 3, ("prompt", "response", "helpfulness", "correctness", "coherence"),
           "HelpSteer2 disagreements: per-annotator lists of ratings, averaged",
           lambda r: isinstance(r["helpfulness"], list)),
    Layout("ultrafeedback", "score", 3, ("instruction", "completions"),
           "UltraFeedback raw: instruction + completions with overall_score 1-10 / fine-grained_score 1-5"),
    Layout("columns", "score", 3, (),
           "any prompt/response file with a --score-column on a declared --scale", detected=False),
    Layout("ultrachat", "unfold", 4, ("data",), "raw UltraChat: data = [user, assistant, user, ...]"),
    Layout("sharegpt", "unfold", 5, ("conversations",), "ShareGPT: conversations = [{from, value}, ...]"),
    Layout("messages", "unfold", 6, ("messages",), "messages = [{role, content}, ...] (ultrachat_200k, chat logs)"),
)
ALIASES = {"helpsteer": "helpsteer2", "ultrachat_200k": "messages", "ultrafeedback_binarized": "pairwise_conversation"}
BY_NAME = {layout.name: layout for layout in LAYOUTS}


def names(command: Command) -> list[str]:
    return [layout.name for layout in LAYOUTS if layout.command == command]


def resolve(command: Command, fmt: str | None, record: dict, where: str) -> Layout:
    """The layout named by `--format`, else the detected one; errors say what to do."""
    if fmt is not None:
        layout = BY_NAME.get(ALIASES.get(fmt, fmt))
        if layout is None or layout.command != command:
            allowed = names(command) + [a for a, target in ALIASES.items() if BY_NAME[target].command == command]
            raise UftDataError("--format", "unknown layout for this command", got=fmt, expected=", ".join(allowed))
        missing = [k for k in layout.keys if k not in record]
        if missing:
            raise UftDataError(f"{where}: field {missing[0]!r}", f"is missing for --format {layout.name}",
                               expected="fields " + ", ".join(layout.keys))
        return layout
    return detect(command, record, where)


def detect(command: Command, record: dict, where: str) -> Layout:
    found = [layout for layout in LAYOUTS if layout.detected and set(layout.keys) <= record.keys()
             and layout.matches(record)]
    if not found:
        raise UftDataError(
            where, "unknown layout", got=sorted(record)[:12],
            expected="the fields of one of: " + ", ".join(names(command)),
            fix="Rename the columns, or pass --format (see --help).",
        )
    first = min(layout.step for layout in found)
    best = [layout for layout in found if layout.step == first]
    if len(best) > 1:
        raise UftDataError(where, "ambiguous layout", got=[b.name for b in best],
                           fix="Pass --format with the one you mean.")
    layout = best[0]
    if layout.command != command:
        hint = "it is already in the uft row schema" if layout.name == "uft" else f"it is a {layout.name} file"
        raise UftDataError(where, f"`uftdata {command}` does not read this layout; {hint}",
                           fix=f"Use `uftdata {layout.command}`" + (" --pairs-from-scores" if layout.name == "uft" else "")
                           + ", or pass --format.")
    return layout
