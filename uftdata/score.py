"""`uftdata score`: rated responses -> `score` rows, score in [0, 1] (docs/design.md, "Scores").

One adapter per source layout, each `(record, where, notes) -> rows` for `rows.convert_files`:
- helpsteer2 (and HelpSteer v1): weighted attributes rescaled by the weighted sum's own extremes;
- helpsteer2_disagreements: the same after averaging each attribute's per-annotator list;
- ultrafeedback (raw): one row per rated completion, `(s-1)/9` or `(s-1)/4`;
- columns: any prompt/response file with `--score-column` on a declared `--scale MIN:MAX`.
Scores are computed in float64 here; `build_rows` casts them to float32 once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType

from uftdata.conversation import Message, split_helpsteer2_prompt
from uftdata.errors import RecordError, UftDataError
from uftdata.fields import (
    MISSING_RATINGS,
    mean_rating,
    prompt_messages,
    rating,
    rescale,
    response_message,
    source_id_from,
    string_field,
)
from uftdata.layouts import Layout
from uftdata.rowcommand import Produce, convert_inputs
from uftdata.rows import Adapter, Drop, Row

HELPSTEER2_WEIGHTS: Mapping[str, float] = MappingProxyType({"helpfulness": 0.65, "correctness": 0.8, "coherence": 0.45})
HELPSTEER_ATTRIBUTES = ("coherence", "complexity", "correctness", "helpfulness", "verbosity")
# field holding the rating and its declared range, per --ultrafeedback-rating
ULTRAFEEDBACK_RATINGS: Mapping[str, tuple[str, float, float]] = MappingProxyType(
    {"overall": ("overall_score", 1.0, 10.0), "fine-grained": ("fine-grained_score", 1.0, 5.0)}
)
SNAP_TOLERANCE = 1e-9  # float64 rounding of the weighted sums, not bad data (4/4/4 / 7.6 = 1.0000000000000002)


@dataclass(frozen=True)
class ScoreOptions:
    weights: Mapping[str, float]
    """Attribute -> weight, for the HelpSteer layouts (negative weights allowed)."""
    score_column: str | None = None
    """Generic `columns` layout: the column holding the rating."""
    scale: tuple[float, float] | None = None
    """Declared MIN, MAX of `score_column`; a value outside is an error."""
    prompt_column: str = "prompt"
    """Generic layout: prompt column, a string (one user message) or a message list ending with a user message."""
    response_column: str = "response"
    """Generic layout: response column, a string, an assistant message, or a one-element list of one."""
    ultrafeedback_rating: str = "overall"
    """UltraFeedback raw: `overall` (overall_score 1-10) or `fine-grained` (fine-grained_score 1-5)."""
    attribute_range: tuple[float, float] = (0.0, 4.0)
    """Range of every HelpSteer attribute rating."""


# ---------------------------------------------------------------------------------------------
# Pure arithmetic


def weighted_range(weights: Mapping[str, float], attribute_range: tuple[float, float]) -> tuple[float, float]:
    """Min and max of sum(w_i * a_i) over the attribute range; a negative weight's min is at the range's max."""
    lo, hi = attribute_range
    # fsum: exactly rounded, so the result does not depend on the order the weights were given in.
    return (math.fsum(w * (lo if w >= 0 else hi) for w in weights.values()),
            math.fsum(w * (hi if w >= 0 else lo) for w in weights.values()))


def weighted_score(ratings: Mapping[str, float], weights: Mapping[str, float],
                   attribute_range: tuple[float, float]) -> float:
    """(sum(w_i * a_i) - lo) / (hi - lo) in float64, unsnapped (see `to_unit`)."""
    total = math.fsum(w * ratings[name] for name, w in weights.items())
    return rescale(total, *weighted_range(weights, attribute_range))


def to_unit(value: float, where: str, field: str) -> float:
    """`value` if in [0, 1]; within SNAP_TOLERANCE of it, the bound; further out (or NaN), an error."""
    if -SNAP_TOLERANCE <= value < 0.0:
        return 0.0
    if 1.0 < value <= 1.0 + SNAP_TOLERANCE:
        return 1.0
    if not 0.0 <= value <= 1.0:
        raise RecordError(where, field, "gives a score outside [0, 1]", got=value, expected="a score in [0, 1]")
    return value


def check_weights(weights: Mapping[str, float], attribute_range: tuple[float, float]) -> None:
    """Weights that give a defined score: finite, and not all zero (else hi == lo)."""
    bad = {name: w for name, w in weights.items() if not math.isfinite(w)}
    if bad:
        raise UftDataError("--weight", "is not a finite number", got=bad)
    lo, hi = weighted_range(weights, attribute_range)
    if not lo < hi:
        raise UftDataError("--weight", "leaves no range to rescale (all weights zero, or none given)",
                           got=dict(weights), fix="Give at least one non-zero weight, e.g. --weight helpfulness=1.")


def score_row(prompt: list[Message], completion: Message, score: float, source_id: str,
              attributes: Mapping[str, float]) -> Row:
    if not completion["content"].strip():
        raise Drop("empty_completion")
    return {
        "prompt": prompt, "completion": completion, "score": score, "kind": "score", "label": None, "pair": None,
        "source_id": source_id,
        "attributes": [{"name": name, "value": value} for name, value in sorted(attributes.items())],
    }


# ---------------------------------------------------------------------------------------------
# Adapters


RatingReader = Callable[[object, str, str, float, float], float]


def helpsteer2_rows(record: dict, where: str, notes: Counter[str], *, options: ScoreOptions,
                    read: RatingReader = rating) -> list[Row]:
    """HelpSteer / HelpSteer2: one row; attributes = every rating present plus every weighted one."""
    turns = split_helpsteer2_prompt(string_field(record.get("prompt"), where, "prompt"))
    prompt = prompt_messages(turns, where, "prompt")
    response = string_field(record.get("response"), where, "response")
    names = sorted({*options.weights, *(a for a in HELPSTEER_ATTRIBUTES if a in record)})
    missing = next((name for name in names if name not in record), None)
    if missing is not None:
        raise RecordError(where, missing, "is missing but has a weight",
                          expected="fields " + ", ".join(sorted(options.weights)), fix="Check --weight.")
    ratings = {name: read(record[name], where, name, *options.attribute_range) for name in names}
    score = weighted_score(ratings, options.weights, options.attribute_range)
    completion = {"role": "assistant", "content": response}
    return [score_row(prompt, completion, to_unit(score, where, "score"), source_id_from(where), ratings)]


def ultrafeedback_rows(record: dict, where: str, notes: Counter[str], *, options: ScoreOptions) -> list[Row]:
    """UltraFeedback raw: one row per rated, non-empty completion; the others are counted in `notes`
    (only for records that are used; a record with nothing left is dropped under the first reason)."""
    field, lo, hi = ULTRAFEEDBACK_RATINGS[options.ultrafeedback_rating]
    prompt = prompt_messages(string_field(record.get("instruction"), where, "instruction"), where, "instruction")
    completions = record.get("completions")
    if not isinstance(completions, list):
        raise RecordError(where, "completions", "is missing or not a list", got=type(completions).__name__)
    rows: list[Row] = []
    skipped: Counter[str] = Counter()
    for i, completion in enumerate(completions):
        if not isinstance(completion, dict):
            raise RecordError(where, f"completions[{i}]", "is not an object", got=completion)
        value = completion.get(field)
        if value in MISSING_RATINGS:
            skipped["missing_rating"] += 1
            continue
        s = rating(value, where, f"completions[{i}].{field}", lo, hi)
        response = string_field(completion.get("response"), where, f"completions[{i}].response")
        try:
            rows.append(score_row(prompt, {"role": "assistant", "content": response}, rescale(s, lo, hi),
                                  f"{source_id_from(where)}#{i}", {field: s}))
        except Drop as drop:
            skipped[drop.reason] += 1
    if not rows:
        raise Drop(next(iter(skipped), "no_completions"))
    notes.update(skipped)
    return rows


def columns_rows(record: dict, where: str, notes: Counter[str], *, options: ScoreOptions, column: str,
                 scale: tuple[float, float]) -> list[Row]:
    """Any prompt/response file: the score column rescaled from its declared scale."""
    lo, hi = scale
    for name in (options.prompt_column, options.response_column, column):
        if name not in record:
            raise RecordError(where, name, "is missing", fix="Check --prompt-column, --response-column and --score-column.")
    if record[column] in MISSING_RATINGS:
        raise Drop("missing_rating")
    value = rating(record[column], where, column, lo, hi)
    prompt = prompt_messages(record[options.prompt_column], where, options.prompt_column)
    completion = response_message(record[options.response_column], where, options.response_column)
    return [score_row(prompt, completion, rescale(value, lo, hi), source_id_from(where), {column: value})]


def adapter_for(layout: Layout, options: ScoreOptions) -> Adapter:
    """The per-record adapter for a score layout, with the options checked once up front."""
    if layout.name in ("helpsteer2", "helpsteer2_disagreements"):
        check_weights(options.weights, options.attribute_range)
        read = mean_rating if layout.name == "helpsteer2_disagreements" else rating
        return partial(helpsteer2_rows, options=options, read=read)
    if layout.name == "ultrafeedback":
        if options.ultrafeedback_rating not in ULTRAFEEDBACK_RATINGS:
            raise UftDataError("--ultrafeedback-rating", "is not a known rating", got=options.ultrafeedback_rating,
                               expected=" or ".join(ULTRAFEEDBACK_RATINGS))
        return partial(ultrafeedback_rows, options=options)
    if layout.name == "columns":
        if options.score_column is None or options.scale is None:
            raise UftDataError("--format columns", "needs --score-column and --scale MIN:MAX",
                               got={"score_column": options.score_column, "scale": options.scale})
        return partial(columns_rows, options=options, column=options.score_column, scale=options.scale)
    raise UftDataError("--format", "is not a layout `uftdata score` reads", got=layout.name,
                       expected="helpsteer2, helpsteer2_disagreements, ultrafeedback or columns")


def score_inputs(inputs: list[str], fmt: str | None, source: str | None, options: ScoreOptions) -> Produce:
    """`uftdata score`'s rows (for rowcommand.run_rows_command): every input through its layout's
    adapter, under its source name."""
    return convert_inputs("score", inputs, fmt, source, partial(adapter_for, options=options))
