"""The miniature world's one tiny grammar: fact sentences, questions and filler, rendered and parsed.

Every answer has one fixed surface form, the pretraining sentence of the fact ("Bramo lives in
Tesk.", "17 plus 25 is 42."), so the instruction data teaches a format the base model already
knows, and the reward function can check a response by parsing it instead of by fuzzy matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENTITY_KINDS = ("city", "age", "color", "pet")
ARITHMETIC_KINDS = ("plus", "minus")
KINDS = ENTITY_KINDS + ARITHMETIC_KINDS

# Closed vocabularies. The cities are invented so that no pretraining-free prior helps guess them.
CITIES = ("Tesk", "Vorlan", "Miradel", "Oskarn", "Pellin", "Durvo", "Saltor", "Quenby", "Hathe", "Lunmar",
          "Brisk", "Carvel")
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "brown", "pink")
PETS = ("cat", "dog", "fish", "bird", "rabbit", "horse", "mouse", "turtle", "goat", "snake")
AGES = (10, 99)  # inclusive
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "city": CITIES, "color": COLORS, "pet": PETS,
    "age": tuple(str(a) for a in range(AGES[0], AGES[1] + 1)),
}

FACT_TEMPLATES = {
    "city": "{subject} lives in {value}.",
    "age": "{subject} is {value} years old.",
    "color": "{subject} likes the color {value}.",
    "pet": "{subject} has a pet {value}.",
    # arithmetic subjects are the expression itself: "17 plus 25"
    "plus": "{subject} is {value}.",
    "minus": "{subject} is {value}.",
}
# Echo questions ("Bramo lives in which city?"): the subject opens the message, as it opens the
# answer and every pretraining line (world.pretraining_corpus), so all three tokenize it alike
# (byte-level BPE: "Bramo" at a start and " Bramo" after a space are unrelated tokens). Measured on
# the default world, one SFT epoch: natural questions ("Where does Bramo live?") over space-joined
# paragraphs, 0.5% held-out accuracy (no subject copied); echo questions over one sentence per
# line, 44%.
QUESTION_TEMPLATES = {
    "city": "{subject} lives in which city?",
    "age": "{subject} is how old?",
    "color": "{subject} likes which color?",
    "pet": "{subject} has which pet?",
    "plus": "{subject} is what?",
    "minus": "{subject} is what?",
}
# Polite padding: grammatical, on no topic. Padded responses wrap the answer in these.
FILLERS = (
    "Sure.", "Good question.", "Let me think about that.", "Here is what I know.", "I hope this helps.",
    "Happy to help.", "Let me know if you have other questions.", "That is a fair thing to ask.",
)

_NAME = r"[A-Z][a-z]+"
_NUMBER = r"-?\d+"
_WORD = r"[A-Za-z]+"
_SUBJECTS = {"city": _NAME, "age": _NAME, "color": _NAME, "pet": _NAME,
             "plus": r"\d+ plus \d+", "minus": r"\d+ minus \d+"}
_VALUES = {"city": _WORD, "age": _NUMBER, "color": _WORD, "pet": _WORD, "plus": _NUMBER, "minus": _NUMBER}


def _pattern(template: str, kind: str, value: str | None) -> re.Pattern[str]:
    escaped = re.escape(template).replace(r"\{subject\}", f"(?P<subject>{_SUBJECTS[kind]})")
    return re.compile(escaped.replace(r"\{value\}", f"(?P<value>{value})") if value else escaped)


_FACT_PATTERNS = {kind: _pattern(t, kind, _VALUES[kind]) for kind, t in FACT_TEMPLATES.items()}
_QUESTION_PATTERNS = {kind: _pattern(t, kind, None) for kind, t in QUESTION_TEMPLATES.items()}


@dataclass(frozen=True)
class Fact:
    """One ground-truth statement: `subject` (an entity name or "17 plus 25"), its `kind`, its `value`."""

    subject: str
    kind: str
    value: str

    @property
    def sentence(self) -> str:
        return FACT_TEMPLATES[self.kind].format(subject=self.subject, value=self.value)

    @property
    def prefix(self) -> str:
        """The sentence up to the value, for fact-recall probes: "Bramo lives in"."""
        return FACT_TEMPLATES[self.kind].split(" {value}")[0].format(subject=self.subject)


@dataclass(frozen=True)
class Question:
    """A question with one correct answer: `answer` is the bare value ("Tesk", "42")."""

    prompt: str
    answer: str
    kind: str
    subject: str

    @classmethod
    def about(cls, fact: Fact) -> Question:
        return cls(QUESTION_TEMPLATES[fact.kind].format(subject=fact.subject), fact.value, fact.kind, fact.subject)

    @property
    def fact(self) -> Fact:
        return Fact(self.subject, self.kind, self.answer)

    @property
    def good_response(self) -> str:
        """The correct answer in the fixed form: the fact's pretraining sentence."""
        return self.fact.sentence


def split_sentences(text: str) -> list[str]:
    """Sentences end at `.`, `!` or `?` followed by whitespace; an unterminated tail is a sentence too."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def parse_fact(sentence: str) -> Fact | None:
    """The fact a sentence states in the fixed form, or None. `sentence` must be one whole sentence."""
    for kind, pattern in _FACT_PATTERNS.items():
        match = pattern.fullmatch(sentence)
        if match:
            return Fact(match["subject"], kind, match["value"])
    return None


def is_question(sentence: str) -> bool:
    return any(p.fullmatch(sentence) for p in _QUESTION_PATTERNS.values())


def is_filler(sentence: str) -> bool:
    return sentence in FILLERS


def parse_bare_value(kind: str, text: str) -> str | None:
    """A response that is only a value ("Tesk", "42."): that value if it has the kind's shape.

    Names of cities, colors and pets must be in their vocabulary (any other word is not an answer);
    numbers are any integer.
    """
    bare = text.strip().rstrip(".!")
    if kind in ("age", *ARITHMETIC_KINDS):
        return bare if re.fullmatch(_NUMBER, bare) else None
    return bare if bare in VOCABULARIES[kind] else None
