"""The miniature world: determinism, held-out disjointness, and raw files `uftdata` reads."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import UFTDATA

from uft_miniature.grammar import Question, split_sentences
from uft_miniature.reward import attributes, reward
from uft_miniature.sources import instruction_conversations, rated_responses, write_world
from uft_miniature.world import (
    WorldConfig,
    build_world,
    dialogue_documents,
    eval_questions,
    fact_probes,
    invent_names,
    pretraining_corpus,
    rng_for,
)
from uft_train.tokenizer import build_tokenizer

SMALL = WorldConfig(entities=40, max_operand=6, dialogue_entities=10)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    write_world(build_world(SMALL), tmp_path / "a", conversations=50, eval_size=20, probes=20)
    build_world.cache_clear()  # rebuild from scratch: the bytes must not depend on a cached object
    write_world(build_world(SMALL), tmp_path / "b", conversations=50, eval_size=20, probes=20)
    write_world(build_world(WorldConfig(seed=1, entities=40, max_operand=6, dialogue_entities=10)), tmp_path / "c",
                conversations=50, eval_size=20, probes=20)
    a, b, c = (folder_bytes(tmp_path / name) for name in "abc")
    assert a == b
    assert sorted(a) == sorted(c) == sorted([
        "ultrachat.jsonl", "helpsteer2.jsonl", "helpsteer2_validation.jsonl", "pretrain_train.jsonl",
        "pretrain_heldout.jsonl", "eval_questions.jsonl", "selection_questions.jsonl", "fact_probes.jsonl",
        "world.json"])
    assert all(a[name] != c[name] for name in a)


def test_selection_questions_file(tmp_path: Path) -> None:
    """The whole selection pool by default, its first n with `selection_size`, in the eval file's layout."""
    world = build_world(SMALL)
    counts = write_world(world, tmp_path / "all", conversations=5, eval_size=5, probes=5)
    assert counts["selection_questions.jsonl"] == len(world.pools["selection"]) > 0
    write_world(world, tmp_path / "few", conversations=5, eval_size=5, probes=5, selection_size=3)
    lines = (tmp_path / "few" / "selection_questions.jsonl").read_text().splitlines()
    assert [Question(**json.loads(line)) for line in lines] == list(world.pools["selection"][:3])


def test_world_shape() -> None:
    world = build_world(SMALL)
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names) == 40
    # 6 * 6 sums and 15 differences, 10% of them held out of the corpus
    assert len(world.arithmetic) + len(world.arithmetic_heldout) == 36 + 15
    assert len(world.arithmetic_heldout) == 5
    assert list(world.pools) == ["eval", "selection", "instruction", "rated", "validation"]
    askable = sum(len(p) for p in world.pools.values())
    assert askable == 40 * 4 + 46
    # per entity kind of 40 facts: round(0.2 * 40) eval, round(0.1 * 40) selection questions
    assert sum(q.kind == "city" for q in world.pools["eval"]) == 8
    assert sum(q.kind == "city" for q in world.pools["selection"]) == 4
    assert len(world.dialogue_entities) == 10


def test_heldout_disjointness() -> None:
    world = build_world(SMALL)
    evals = eval_questions(world, len(world.pools["eval"]))
    eval_prompts = {q.prompt for q in evals}
    asked = {m for c in instruction_conversations(world, 500) for m in c["data"][0::2]}
    rated = {r["prompt"] for split in ("train", "validation")
             for r in rated_responses(world, len(world.pools["rated" if split == "train" else split]), split=split)}
    assert asked and rated and eval_prompts
    assert not eval_prompts & asked and not eval_prompts & rated and not asked & rated
    pools = {name: {q.prompt for q in questions} for name, questions in world.pools.items()}
    for name, prompts in pools.items():
        assert prompts and all(not prompts & other for n, other in pools.items() if n != name)

    train, heldout = pretraining_corpus(world)
    train_sentences = {s for text in train for s in split_sentences(text)}
    assert {q.good_response for q in evals} <= train_sentences  # the base can know every answer
    assert {f.sentence for f in world.facts} <= train_sentences
    assert not set(heldout) & set(train)  # held-out texts are new texts...
    heldout_arithmetic = {f.sentence for f in world.arithmetic_heldout}
    for text in heldout:  # ...of known entity facts in an unseen order, or of never-stated arithmetic
        sentences = set(split_sentences(text))
        assert sentences <= train_sentences or sentences <= heldout_arithmetic
    assert not heldout_arithmetic & train_sentences
    assert set(fact_probes(world, 50)) <= {(f.prefix, f.value) for f in world.facts}


def test_distractors_are_only_in_chat_transcripts() -> None:
    world = build_world(SMALL)
    names = {e.name for e in world.entities}
    distractors = {e.name for e in world.dialogue_entities}
    assert len(distractors) == 10 and not names & distractors
    # the world's own names are those of a world without distractors
    assert [e.name for e in world.entities] == invent_names(40, rng_for(SMALL, "names"))
    assert not distractors & {f.subject for f in world.facts}
    assert not distractors & {q.subject for pool in world.pools.values() for q in pool}
    train, heldout = pretraining_corpus(world)
    chats = [t for t in train if t.startswith("<|user|>")]
    assert chats == [t for t in train if any(name in t for name in distractors)]  # only, and all, in chats
    assert sorted(chats) == sorted(dialogue_documents(world)) and len(chats) == 10 * 2
    assert not any(name in t for t in heldout for name in distractors)


def test_chat_transcript_is_the_chat_template_rendering() -> None:
    """A transcript of the corpus is what the project's tokenizer renders for its questions (1-3
    distinct facts of one distractor) and their good answers."""
    world = build_world(SMALL)
    tokenizer = build_tokenizer(["Hi"], vocab_size=300)
    questions = {Question.about(f).prompt: Question.about(f) for f in world.dialogue_entities[0].facts}
    for document in dialogue_documents(world)[:2]:  # the first distractor's two conversations
        prompts = re.findall(r"<\|user\|>(.*?)<\|end\|>", document)
        assert 1 <= len(set(prompts)) == len(prompts) <= 3
        messages = [m for p in prompts for m in ({"role": "user", "content": p},
                                                 {"role": "assistant", "content": questions[p].good_response})]
        assert document == tokenizer.apply_chat_template(messages, tokenize=False)


def test_rated_responses_carry_the_reward_attributes() -> None:
    world = build_world(SMALL)
    records = rated_responses(world, 10, seed=3)
    assert len(records) == 40
    by_prompt = [records[i:i + 4] for i in range(0, 40, 4)]
    for group in by_prompt:
        question = next(q for q in world.pools["rated"] if q.prompt == group[0]["prompt"])
        scores = [reward(question, r["response"]) for r in group]
        assert scores[0] == 1.0 and scores[0] > scores[1] > scores[2] > scores[3]  # good, padded, wrong, worst
        for record in group:
            assert {k: record[k] for k in attributes(question, "")} == attributes(question, record["response"])


def test_conversation_layout() -> None:
    conversations = instruction_conversations(build_world(SMALL), 30, seed=1)
    assert [c["id"] for c in conversations[:2]] == ["mini-1-00000", "mini-1-00001"]
    assert {len(c["data"]) for c in conversations} == {2, 4, 6}
    for c in conversations:
        for prompt, answer in zip(c["data"][0::2], c["data"][1::2]):
            assert attributes(next(q for q in build_world(SMALL).pools["instruction"] if q.prompt == prompt),
                              answer)["correctness"] == 4


def test_pool_too_small_is_an_error() -> None:
    with pytest.raises(ValueError, match="eval pool has"):
        eval_questions(build_world(SMALL), 10_000)


def run(*args: str) -> str:
    done = subprocess.run([UFTDATA, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_uftdata_reads_the_raw_files(tmp_path: Path) -> None:
    world = build_world(SMALL)
    counts = write_world(world, tmp_path, conversations=30, eval_size=20, probes=20)
    turns = sum(len(json.loads(line)["data"]) // 2 for line in (tmp_path / "ultrachat.jsonl").open())
    run("unfold", str(tmp_path / "ultrachat.jsonl"), "-o", str(tmp_path / "uc.parquet"))
    run("score", str(tmp_path / "helpsteer2.jsonl"), "-o", str(tmp_path / "hs.parquet"))
    run("feedback", "--pairs-from-scores", str(tmp_path / "hs.parquet"), "-o", str(tmp_path / "pairs.parquet"))
    assert pl.read_parquet(tmp_path / "uc.parquet").height == turns
    scores = pl.read_parquet(tmp_path / "hs.parquet")
    assert scores.height == counts["helpsteer2.jsonl"]
    # `uftdata score`'s default weighting reproduces reward() (stored as float32)
    questions = {q.prompt: q for q in world.pools["rated"]}
    for row in scores.iter_rows(named=True):
        question: Question = questions[row["prompt"][0]["content"]]
        assert row["score"] == pytest.approx(reward(question, row["completion"][0]["content"]), abs=1e-7)
    # one pair per prompt: the good response against the worst
    assert pl.read_parquet(tmp_path / "pairs.parquet").height == 2 * counts["helpsteer2.jsonl"] // 4


def test_world_config_reports_every_problem() -> None:
    with pytest.raises(ValueError, match=r"eval_share must be in \[0, 1\].*eval_share \+ selection_share \+ rated_share"):
        WorldConfig(eval_share=1.5)
    with pytest.raises(ValueError, match=r"selection_share \+ rated_share must be at most 1 \(got 1.1"):
        WorldConfig(eval_share=0.5, selection_share=0.3, rated_share=0.3)
    with pytest.raises(ValueError, match="dialogue_entities and dialogue_conversations must be at least 0"):
        WorldConfig(dialogue_conversations=-1)
