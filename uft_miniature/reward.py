"""The known reward function: HelpSteer2-style attributes computed by parsing a response.

The rated responses of the miniature world carry exactly these attributes, so `uftdata score`'s
default HelpSteer2 weighting reproduces `reward()` on them, and generated responses can be scored
with the same function the feedback data was "annotated" with.

Rules (`n_good` = words of the good form, `A` = values the response's fact sentences state for the
question's subject and kind):
- answer: the one value in `A`; if the response has no fact sentence at all, a bare value
  ("Tesk.", "42"); None when there is none or `A` holds conflicting values.
- correctness: 4 if the answer is right; 2 if the right value is among conflicting ones; else 0.
- coherence: 4 if every sentence is a fact, a question of the grammar or a filler; 0 if none is
  (or the response is empty); 2 in between.
- verbosity, from words / n_good: 0 if empty; 1 if <= 1; 2 if <= 1.5; 3 if <= 2.5; else 4.
- helpfulness: right answer: 4 if verbosity <= 1, 3 if 2, 2 if more, one less if coherence < 4;
  a wrong or conflicting answer: 1; no answer: 0.
- complexity: distinct facts stated, at most 4 (not weighted by the default score).
"""

from __future__ import annotations

from uft_miniature.grammar import Question, is_filler, is_question, parse_bare_value, parse_fact, split_sentences
from uftdata.score import HELPSTEER2_WEIGHTS, to_unit, weighted_score

ATTRIBUTE_RANGE = (0.0, 4.0)  # HelpSteer2's, and `uftdata score`'s default


def stated_values(question: Question, response: str) -> list[str]:
    """Distinct values the response's fact sentences give for the question's subject and kind, in order."""
    values: list[str] = []
    for sentence in split_sentences(response):
        fact = parse_fact(sentence)
        if fact and fact.subject == question.subject and fact.kind == question.kind and fact.value not in values:
            values.append(fact.value)
    return values


def extract_answer(question: Question, response: str) -> str | None:
    """The value the response gives as its answer, or None (no answer, or conflicting answers)."""
    values = stated_values(question, response)
    if len(values) == 1:
        return values[0]
    if not values and not any(parse_fact(s) for s in split_sentences(response)):
        return parse_bare_value(question.kind, response)
    return None


def attributes(question: Question, response: str) -> dict[str, int]:
    """helpfulness, correctness, coherence, complexity, verbosity: ints 0-4 (rules in the module doc)."""
    sentences = split_sentences(response)
    answer = extract_answer(question, response)
    values = stated_values(question, response)
    if answer == question.answer:
        correctness = 4
    elif question.answer in values:
        correctness = 2
    else:
        correctness = 0

    known = sum(1 for s in sentences if parse_fact(s) or is_question(s) or is_filler(s))
    coherence = 0 if known == 0 else 4 if known == len(sentences) else 2

    words, good_words = len(response.split()), len(question.good_response.split())
    ratio = words / good_words
    verbosity = 0 if words == 0 else 1 if ratio <= 1 else 2 if ratio <= 1.5 else 3 if ratio <= 2.5 else 4

    if correctness == 4:
        helpfulness = (4 if verbosity <= 1 else 3 if verbosity == 2 else 2) - (coherence < 4)
    elif answer is not None or values:
        helpfulness = 1
    else:
        helpfulness = 0

    complexity = min(4, len({fact for s in sentences if (fact := parse_fact(s))}))
    return {"helpfulness": helpfulness, "correctness": correctness, "coherence": coherence,
            "complexity": complexity, "verbosity": verbosity}


def reward(question: Question, response: str) -> float:
    """The response's score under `uftdata score`'s default HelpSteer2 weighting, in [0, 1] (float64;
    `uftdata` stores the same value cast to float32)."""
    ratings = attributes(question, response)
    return to_unit(weighted_score(ratings, HELPSTEER2_WEIGHTS, ATTRIBUTE_RANGE), "reward", "score")
