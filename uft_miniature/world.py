"""A seeded synthetic world with known ground truth: entities, their facts, arithmetic.

Everything here is a pure function of a frozen `WorldConfig` (and, for samples, an explicit seed):
each draw uses its own `random.Random` seeded with a string naming the config seed and the purpose,
never the global RNG, so the same config gives the same bytes on every machine and in any call order.

Which facts go where (`build_world`):
- Every entity fact and every arithmetic fact except `heldout_arithmetic` of them is stated in the
  pretraining corpus: the base model can know them.
- The askable facts are split per kind into disjoint pools: `eval` (held-out questions),
  `selection` (held-out questions for choosing among trained models, so that choice never looks
  at `eval`), `rated` (HelpSteer2-like prompts; `validation` carved from it) and `instruction`
  (the rest, UltraChat-like conversations). So no evaluation question is ever asked in training
  data, but its answer is in the pretraining corpus.
- A second set of invented people, the `dialogue_entities`, appears only in chat transcripts of
  the pretraining corpus (`dialogue_documents`): the base model sees the chat format, as real base
  models see dialogue on the web, without seeing a single question about the world's own people.
  Their facts are in no pool and not in `World.facts`; nothing evaluates them.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

from uft_miniature.grammar import (
    CITIES,
    COLORS,
    ENTITY_KINDS,
    FACT_TEMPLATES,
    FILLERS,
    KINDS,
    PETS,
    QUESTION_TEMPLATES,
    Fact,
    Question,
)
from uft_train.tokenizer import END_OF_TURN, ROLE_TOKENS

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "l", "m", "n", "p", "r", "s", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s")


@dataclass(frozen=True)
class WorldConfig:
    """The world's shape; every output is a pure function of it."""

    seed: int = 0
    """Seed of every draw (names, attributes, splits, corpus order)."""
    entities: int = 240
    """Invented people, each with a city, an age, a favorite color and a pet."""
    max_operand: int = 15
    """Arithmetic over 1..max_operand: every `a plus b`, and `a minus b` with a > b."""
    heldout_arithmetic: float = 0.1
    """Share of arithmetic facts kept out of the pretraining corpus (held-out perplexity only)."""
    arithmetic_documents: int = 2
    """Pretraining documents stating each arithmetic fact (each document states its facts twice)."""
    arithmetic_per_document: int = 4
    """Distinct arithmetic facts per pretraining document."""
    eval_share: float = 0.2
    """Share of each kind's askable facts held out as evaluation questions."""
    selection_share: float = 0.1
    """Share of each kind's askable facts held out as selection questions (model selection, not eval)."""
    rated_share: float = 0.25
    """Share of each kind's askable facts used as rated (HelpSteer2-like) prompts."""
    validation_share: float = 0.1
    """Share of the rated prompts set aside as the rated validation split."""
    dialogue_entities: int = 240
    """Distractor people (names disjoint from `entities`) whose facts appear only as chat transcripts
    in the pretraining corpus: the base model learns the chat format on them, never on a world question."""
    dialogue_conversations: int = 2
    """Chat transcripts per distractor person, each asking 1-3 of its facts."""

    def __post_init__(self) -> None:
        problems = [f"{name} must be in [0, 1] (got {value})" for name, value in (
            ("heldout_arithmetic", self.heldout_arithmetic), ("eval_share", self.eval_share),
            ("selection_share", self.selection_share), ("rated_share", self.rated_share),
            ("validation_share", self.validation_share)) if not 0 <= value <= 1]
        held_out = self.eval_share + self.selection_share + self.rated_share
        if held_out > 1:
            problems.append(f"eval_share + selection_share + rated_share must be at most 1 (got {held_out})")
        if self.entities < 1 or self.max_operand < 2:
            problems.append(f"entities >= 1 and max_operand >= 2 (got {self.entities}, {self.max_operand})")
        if self.arithmetic_documents < 1 or self.arithmetic_per_document < 1:
            problems.append("arithmetic_documents and arithmetic_per_document must be at least 1")
        if self.dialogue_entities < 0 or self.dialogue_conversations < 0:
            problems.append(f"dialogue_entities and dialogue_conversations must be at least 0 "
                            f"(got {self.dialogue_entities}, {self.dialogue_conversations})")
        if problems:
            raise ValueError("WorldConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class Entity:
    name: str
    facts: tuple[Fact, ...]
    """One fact per ENTITY_KINDS kind, in that order."""


@dataclass(frozen=True)
class World:
    config: WorldConfig
    entities: tuple[Entity, ...]
    arithmetic: tuple[Fact, ...]
    """Arithmetic facts stated in the pretraining corpus."""
    arithmetic_heldout: tuple[Fact, ...]
    """Arithmetic facts never stated anywhere but the held-out pretraining texts."""
    pools: dict[str, tuple[Question, ...]]
    """Disjoint question pools: eval, selection, instruction, rated, validation (each in a seeded order)."""
    dialogue_entities: tuple[Entity, ...]
    """Distractor people, in the pretraining corpus's chat transcripts only (not in `facts`, no pool)."""

    @property
    def facts(self) -> tuple[Fact, ...]:
        """Every fact of the pretraining corpus: entity facts, then arithmetic."""
        return tuple(f for e in self.entities for f in e.facts) + self.arithmetic


def rng_for(config: WorldConfig, purpose: str, seed: int = 0) -> random.Random:
    # A str seed is hashed with SHA-512 by `random`, so it is stable across processes and versions.
    return random.Random(f"uft-miniature:{config.seed}:{purpose}:{seed}")


def _reserved_words() -> frozenset[str]:
    """Words a name must not be, or parsing a sentence could mistake a name for a template word."""
    texts = [*FACT_TEMPLATES.values(), *QUESTION_TEMPLATES.values(), *FILLERS, *CITIES, *COLORS, *PETS]
    return frozenset(w.strip(".?!{}").lower() for t in texts for w in t.split())


def invent_names(n: int, rng: random.Random) -> list[str]:
    """`n` distinct pronounceable names of two syllables, in draw order."""
    reserved = _reserved_words()
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(2))
        if name not in seen and name not in reserved:
            seen.add(name)
            names.append(name.capitalize())
    return names


def _entity(name: str, rng: random.Random) -> Entity:
    values = {"city": rng.choice(CITIES), "age": str(rng.randint(10, 99)), "color": rng.choice(COLORS),
              "pet": rng.choice(PETS)}
    return Entity(name, tuple(Fact(name, kind, values[kind]) for kind in ENTITY_KINDS))


def _arithmetic(max_operand: int) -> list[Fact]:
    operands = range(1, max_operand + 1)
    plus = [Fact(f"{a} plus {b}", "plus", str(a + b)) for a in operands for b in operands]
    minus = [Fact(f"{a} minus {b}", "minus", str(a - b)) for a in operands for b in operands if a > b]
    return plus + minus


def _split_pools(facts: list[Fact], config: WorldConfig, rng: random.Random) -> dict[str, tuple[Question, ...]]:
    """Per kind (so each pool has every kind in proportion): shuffle, then cut by the shares.

    `eval` is cut first and shuffled first, so adding pools after it leaves the eval questions as
    they were.
    """
    pools: dict[str, list[Question]] = {"eval": [], "selection": [], "instruction": [], "rated": [],
                                        "validation": []}
    for kind in KINDS:
        questions = [Question.about(f) for f in facts if f.kind == kind]
        rng.shuffle(questions)
        n_eval = round(config.eval_share * len(questions))
        n_selection = round(config.selection_share * len(questions))
        n_rated = round(config.rated_share * len(questions))
        n_validation = round(config.validation_share * n_rated)
        pools["eval"] += questions[:n_eval]
        pools["selection"] += questions[n_eval:n_eval + n_selection]
        rest = questions[n_eval + n_selection:]
        pools["validation"] += rest[:n_validation]
        pools["rated"] += rest[n_validation:n_rated]
        pools["instruction"] += rest[n_rated:]
    for questions in pools.values():
        rng.shuffle(questions)
    return {name: tuple(questions) for name, questions in pools.items()}


@functools.lru_cache(maxsize=8)
def build_world(config: WorldConfig = WorldConfig()) -> World:
    """The world of `config` (cached: a World is immutable)."""
    # One draw of names for both sets: the world's are its head, exactly as if drawn alone, and
    # the distractors' are distinct from them.
    names = invent_names(config.entities + config.dialogue_entities, rng_for(config, "names"))
    attribute_rng, dialogue_rng = rng_for(config, "attributes"), rng_for(config, "dialogue-attributes")
    entities = tuple(_entity(name, attribute_rng) for name in names[:config.entities])
    distractors = tuple(_entity(name, dialogue_rng) for name in names[config.entities:])
    arithmetic = _arithmetic(config.max_operand)
    rng_for(config, "arithmetic").shuffle(arithmetic)
    n_heldout = round(config.heldout_arithmetic * len(arithmetic))
    heldout, known = arithmetic[:n_heldout], arithmetic[n_heldout:]
    askable = [f for e in entities for f in e.facts] + known
    pools = _split_pools(askable, config, rng_for(config, "pools"))
    return World(config, entities, tuple(known), tuple(heldout), pools, distractors)


def _worksheets(facts: list[Fact], size: int, rng: random.Random) -> list[str]:
    """Documents of `size` facts, then the same facts again in another order.

    The repeat is what teaches the base model to copy from its context (an induction head, which
    real base models get from the repetition in web text): answering "2 plus 10 is what?" with
    "2 plus 10 is 12." means copying the second operand from the question. Measured on the default
    world, three SFT epochs: without repeats, 9% of the held-out sums right (a wrong second operand,
    then its correct sum) against 97-100% of the entity questions; with them, 62%.
    """
    documents = []
    for i in range(0, len(facts), size):
        group = [f.sentence for f in facts[i:i + size]]
        documents.append("\n".join(group + rng.sample(group, len(group))))
    return documents


def chat_document(turns: Sequence[tuple[str, str]]) -> str:
    """(user, assistant) turns as the project's chat template renders them (`uft_train.tokenizer`):
    `<|user|>question<|end|><|assistant|>answer<|end|>` per turn, ending in `<|end|>`."""
    _, user, assistant = ROLE_TOKENS  # system, user, assistant
    return "".join(f"{user}{prompt}{END_OF_TURN}{assistant}{answer}{END_OF_TURN}" for prompt, answer in turns)


def dialogue_documents(world: World) -> list[str]:
    """Per distractor person, `dialogue_conversations` chat transcripts asking 1-3 distinct facts of
    it (echo questions, answers in the good form): the chat format, on people nobody evaluates."""
    rng, documents = rng_for(world.config, "dialogues"), list[str]()
    for entity in world.dialogue_entities:
        for _ in range(world.config.dialogue_conversations):
            questions = [Question.about(f) for f in rng.sample(entity.facts, rng.randint(1, 3))]
            documents.append(chat_document([(q.prompt, q.good_response) for q in questions]))
    return documents


def pretraining_corpus(world: World) -> tuple[list[str], list[str]]:
    """(train_texts, heldout_texts): documents of fact sentences, one sentence per line, and chat
    transcripts about the distractor people.

    One sentence per line puts every subject at the start of a line, which the byte-level BPE
    tokenizes as it does the start of a chat message ("Bramo", not " Bramo"): the base model
    knows its facts in the token form the questions and answers use.

    Train: per entity, four documents stating its four facts in the rotations of one seeded order
    (each fact opens one document); each arithmetic fact in `arithmetic_documents` worksheets of
    `arithmetic_per_document` facts stated twice (see `_worksheets`); the `dialogue_documents`.
    Documents in a seeded order.

    Held-out (new texts, for perplexity): per entity, one paragraph of its known facts in an order
    that is none of its four training rotations; and worksheets of the held-out arithmetic facts,
    which appear in no training text.
    """
    config, rng = world.config, rng_for(world.config, "corpus")
    train, heldout = [], []
    for entity in world.entities:
        order = rng.sample(range(len(entity.facts)), len(entity.facts))
        rotations = [order[i:] + order[:i] for i in range(len(order))]
        train += ["\n".join(entity.facts[k].sentence for k in rotation) for rotation in rotations]
        unseen = [list(p) for p in permutations(order) if list(p) not in rotations]
        heldout.append("\n".join(entity.facts[k].sentence for k in rng.choice(unseen)))
    copies = [f for f in world.arithmetic for _ in range(config.arithmetic_documents)]
    rng.shuffle(copies)
    train += _worksheets(copies, config.arithmetic_per_document, rng)
    train += dialogue_documents(world)
    rng.shuffle(train)
    heldout += _worksheets(list(world.arithmetic_heldout), config.arithmetic_per_document, rng)
    return train, heldout


def eval_questions(world: World, n: int) -> list[Question]:
    """The first `n` held-out questions (seeded order, all kinds in proportion on average)."""
    return list(questions_from(world, "eval", n))


def fact_probes(world: World, n: int) -> list[tuple[str, str]]:
    """`n` (prefix, expected value) pairs over pretraining facts: ("Bramo lives in", "Tesk")."""
    facts = list(world.facts)
    rng_for(world.config, "probes").shuffle(facts)
    if n > len(facts):
        raise ValueError(f"fact_probes: n={n} exceeds the {len(facts)} pretraining facts")
    return [(f.prefix, f.value) for f in facts[:n]]


def questions_from(world: World, pool: str, n: int) -> tuple[Question, ...]:
    """The first `n` questions of one of `world.pools` (an error naming the pool's size if too few)."""
    questions = world.pools[pool]
    if n > len(questions):
        raise ValueError(f"the {pool} pool has {len(questions)} questions (got n={n}); "
                         "ask for fewer or enlarge the world (WorldConfig.entities, max_operand)")
    return questions[:n]
