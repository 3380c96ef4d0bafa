"""The known reward function, one hand-written response per rating level.

Scores by hand with uftdata's default HelpSteer2 weighting, (0.65 h + 0.8 c + 0.45 coh) / 7.6:
good 4/4/4 -> 1; h3 c4 coh4 -> 6.95/7.6; h2 c4 coh4 -> 6.3/7.6; h3 c4 coh0 -> 5.15/7.6;
h2 c4 coh2 -> 5.4/7.6; h1 c2 coh4 -> 4.05/7.6; h1 c0 coh4 -> 2.45/7.6; h0 c0 coh4 -> 1.8/7.6; 0/0/0 -> 0.
"""

from __future__ import annotations

import pytest

from uft_miniature.grammar import Fact, Question, parse_fact, split_sentences
from uft_miniature.reward import attributes, extract_answer, reward

CITY = Question("Bramo lives in which city?", "Tesk", "city", "Bramo")
SUM = Question("17 plus 25 is what?", "42", "plus", "17 plus 25")
AGE = Question("Bramo is how old?", "34", "age", "Bramo")


def ratings(h: int, c: int, coh: int, cx: int, v: int) -> dict[str, int]:
    return {"helpfulness": h, "correctness": c, "coherence": coh, "complexity": cx, "verbosity": v}


CASES = [
    # (question, response, attributes, reward, extracted answer)
    (CITY, "Bramo lives in Tesk.", ratings(4, 4, 4, 1, 1), 1.0, "Tesk"),
    # 5 words / 4 -> verbosity 2 -> helpfulness 3
    (CITY, "Sure. Bramo lives in Tesk.", ratings(3, 4, 4, 1, 2), 6.95 / 7.6, "Tesk"),
    # 9 / 4 = 2.25 -> verbosity 3 -> helpfulness 2
    (CITY, "Sure. Bramo lives in Tesk. I hope this helps.", ratings(2, 4, 4, 1, 3), 6.3 / 7.6, "Tesk"),
    # 15 / 4 -> verbosity 4
    (CITY, "Good question. Let me think about that. Bramo lives in Tesk. I hope this helps.",
     ratings(2, 4, 4, 1, 4), 6.3 / 7.6, "Tesk"),
    # a bare value is an answer, but not a sentence of the grammar: coherence 0, helpfulness 4 - 1
    (CITY, "Tesk.", ratings(3, 4, 0, 0, 1), 5.15 / 7.6, "Tesk"),
    # right answer plus an unparseable sentence: coherence 2; 6 / 4 -> verbosity 2 -> 3 - 1
    (CITY, "Bramo lives in Tesk. blah blah", ratings(2, 4, 2, 1, 2), 5.4 / 7.6, "Tesk"),
    # conflicting answers: no answer extracted, correctness 2; 8 / 4 -> verbosity 3
    (CITY, "Bramo lives in Tesk. Bramo lives in Vorlan.", ratings(1, 2, 4, 2, 3), 4.05 / 7.6, None),
    (CITY, "Bramo lives in Vorlan.", ratings(1, 0, 4, 1, 1), 2.45 / 7.6, "Vorlan"),
    # off-topic: a fact about someone else is no answer, even with the right city in it
    (CITY, "Mela lives in Tesk.", ratings(0, 0, 4, 1, 1), 1.8 / 7.6, None),
    (CITY, "in tesk lives bramo", ratings(0, 0, 0, 0, 1), 0.0, None),
    (CITY, "", ratings(0, 0, 0, 0, 0), 0.0, None),
    (CITY, "Blue.", ratings(0, 0, 0, 0, 1), 0.0, None),  # not a city
    (SUM, "17 plus 25 is 42.", ratings(4, 4, 4, 1, 1), 1.0, "42"),
    (SUM, "17 plus 25 is 43.", ratings(1, 0, 4, 1, 1), 2.45 / 7.6, "43"),
    (SUM, "42", ratings(3, 4, 0, 0, 1), 5.15 / 7.6, "42"),
    (SUM, "17 plus 24 is 41.", ratings(0, 0, 4, 1, 1), 1.8 / 7.6, None),
    (AGE, "Bramo is 34 years old.", ratings(4, 4, 4, 1, 1), 1.0, "34"),
    (AGE, "Bramo is 35 years old.", ratings(1, 0, 4, 1, 1), 2.45 / 7.6, "35"),
]


@pytest.mark.parametrize(("question", "response", "expected", "score", "answer"), CASES)
def test_reward_levels(question: Question, response: str, expected: dict, score: float, answer: str | None) -> None:
    assert attributes(question, response) == expected
    assert reward(question, response) == pytest.approx(score, abs=1e-12)
    assert extract_answer(question, response) == answer


def test_questions_and_fillers_are_coherent() -> None:
    """Repeating the question or a polite filler is grammatical; only the answer counts."""
    assert attributes(CITY, "Bramo lives in which city? Bramo lives in Tesk.")["coherence"] == 4
    assert attributes(CITY, "Happy to help.") == ratings(0, 0, 4, 0, 1)


def test_grammar_round_trip() -> None:
    for fact in (Fact("Bramo", "color", "red"), Fact("Bramo", "pet", "cat"), Fact("3 minus 2", "minus", "1")):
        assert parse_fact(fact.sentence) == fact
        assert fact.sentence.startswith(fact.prefix + " ")
    assert Fact("Bramo", "city", "Tesk").prefix == "Bramo lives in"
    assert split_sentences(" A b. C d? E ") == ["A b.", "C d?", "E"]
