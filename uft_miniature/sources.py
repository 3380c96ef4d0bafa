"""The world's raw source files, in the layouts of the public datasets `uftdata` reads.

- `instruction_conversations`: UltraChat (stingning/ultrachat), `{"id", "data": [user, assistant, ...]}`;
- `rated_responses`: HelpSteer2 (nvidia/HelpSteer2), `{"prompt", "response", helpfulness, correctness,
  coherence, complexity, verbosity}` with the ratings of `reward.attributes`;
- `write_world`: those plus the pretraining texts and the held-out evaluation files, byte-deterministic.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from uft_miniature.grammar import ARITHMETIC_KINDS, FILLERS, VOCABULARIES, Fact, Question
from uft_miniature.reward import attributes
from uft_miniature.world import World, eval_questions, fact_probes, pretraining_corpus, questions_from, rng_for


def instruction_conversations(world: World, n: int, seed: int = 0) -> list[dict]:
    """`n` conversations of 1-3 turns over the instruction pool, answers in the good form.

    A conversation asks distinct questions; questions recur across conversations (the pool has
    about 0.55 x the askable facts), like the everyday questions of UltraChat do.
    """
    rng, pool = rng_for(world.config, "instructions", seed), world.pools["instruction"]
    conversations = []
    for i in range(n):
        data: list[str] = []
        for question in rng.sample(pool, rng.randint(1, 3)):
            data += [question.prompt, question.good_response]
        conversations.append({"id": f"mini-{seed}-{i:05d}", "data": data})
    return conversations


def rated_responses(world: World, n_prompts: int, seed: int = 0, *, split: str = "train") -> list[dict]:
    """Four rated responses to each of `n_prompts` prompts of the rated pool (`split="validation"`:
    of the validation pool): good, padded, subtly wrong, and off-topic or incoherent, in that order.
    The ratings are `reward.attributes` of each response."""
    if split not in ("train", "validation"):
        raise ValueError(f"rated_responses: split must be 'train' or 'validation' (got {split!r})")
    rng = rng_for(world.config, f"rated-{split}", seed)
    questions = rng.sample(questions_from(world, "rated" if split == "train" else "validation", n_prompts), n_prompts)
    same_kind = {kind: [f for f in world.facts if f.kind == kind] for kind in {q.kind for q in questions}}
    records = []
    for question in questions:
        responses = [question.good_response, _padded(question, rng), _wrong(question, rng).sentence,
                     _offtopic(question, same_kind[question.kind], rng) if rng.random() < 0.5
                     else _incoherent(question, rng)]
        records += [{"prompt": question.prompt, "response": r, **attributes(question, r)} for r in responses]
    return records


def _padded(question: Question, rng: random.Random) -> str:
    before = rng.sample(FILLERS[:4], rng.randint(1, 2))  # the openers
    after = rng.sample(FILLERS[4:], rng.randint(0, 2))  # the closers
    return " ".join([*before, question.good_response, *after])


def _wrong(question: Question, rng: random.Random) -> Fact:
    """A plausible wrong value: another word of the vocabulary, an age a few years off, a sum off by one."""
    if question.kind in ARITHMETIC_KINDS:
        value = str(int(question.answer) + rng.choice((-1, 1)))
    elif question.kind == "age":
        age = int(question.answer)
        value = str(age + rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if 10 <= age + d <= 99]))
    else:
        value = rng.choice([v for v in VOCABULARIES[question.kind] if v != question.answer])
    return Fact(question.subject, question.kind, value)


def _offtopic(question: Question, facts: list[Fact], rng: random.Random) -> str:
    """A true statement of the same kind about another subject."""
    return rng.choice([f for f in facts if f.subject != question.subject]).sentence


def _incoherent(question: Question, rng: random.Random) -> str:
    """The good answer's words lowercased and shuffled (never in their original order), unpunctuated."""
    words = question.good_response.rstrip(".").lower().split()
    shuffled = rng.sample(words, len(words))
    return " ".join(shuffled if shuffled != words else words[1:] + words[:1])


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
    path.write_text("".join(lines), encoding="utf-8", newline="\n")


def write_world(world: World, folder: Path, *, conversations: int = 2000, eval_size: int = 200,
                probes: int = 200, selection_size: int | None = None) -> dict[str, int]:
    """Write the raw files the benchmark feeds to `uftdata` and to the evaluation; returns line counts.

    ultrachat.jsonl, helpsteer2.jsonl (every rated prompt), helpsteer2_validation.jsonl (every
    validation prompt), pretrain_train.jsonl / pretrain_heldout.jsonl (`{"text"}`),
    eval_questions.jsonl and selection_questions.jsonl (`{"prompt", "answer", "kind", "subject"}`;
    `selection_size=None`: the whole selection pool), fact_probes.jsonl (`{"prefix", "expected"}`),
    world.json (the config). Same world -> same bytes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train, heldout = pretraining_corpus(world)
    files = {
        "ultrachat.jsonl": instruction_conversations(world, conversations),
        "helpsteer2.jsonl": rated_responses(world, len(world.pools["rated"])),
        "helpsteer2_validation.jsonl": rated_responses(world, len(world.pools["validation"]), split="validation"),
        "pretrain_train.jsonl": [{"text": t} for t in train],
        "pretrain_heldout.jsonl": [{"text": t} for t in heldout],
        "eval_questions.jsonl": [asdict(q) for q in eval_questions(world, eval_size)],
        "selection_questions.jsonl": [asdict(q) for q in questions_from(
            world, "selection", len(world.pools["selection"]) if selection_size is None else selection_size)],
        "fact_probes.jsonl": [{"prefix": p, "expected": e} for p, e in fact_probes(world, probes)],
    }
    for name, records in files.items():
        _write_jsonl(folder / name, records)
    (folder / "world.json").write_text(json.dumps(asdict(world.config), indent=2) + "\n", encoding="utf-8")
    return {name: len(records) for name, records in files.items()}
