"""Tokenization (prefix rule, drops, truncation, kinds), mixture reading, and the seeded batching."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from uft_train.batching import (
    GlobalBatch,
    MicroBatch,
    Unit,
    batch_size_problems,
    global_batches,
    make_units,
    single_rows,
    split_batch,
)
from uft_train.data import Example, check_kinds, read_split, render, tokenize_split
from uft_train.logps import layout, padded_tokens
from uft_train.tokenizer import build_tokenizer
from uftdata.errors import UftDataError
from uftdata.mixout import build_mixtures
from uftdata.mixspec import MixtureSpec, SourceSpec, parse_take
from uftdata.rejects import Rejects
from uftdata.rows import build_rows
from uftdata.schema import KINDS
from uftdata.writer import open_rows

# Roles as plain text and a generation prompt ending in a space: "assistant: " tokenizes to a
# trailing "Ġ" alone, while the whole has "ĠSure" - a string prefix that is not a token prefix.
SPACE_TEMPLATE = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                  "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
# Mistral-v0.1 style (docs/design.md): the completion ends in eos_token, which the tests also use as pad.
INST_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                 "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_tokenizer()


def message(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def rows_frame(*specs: tuple) -> pl.DataFrame:
    """Schema rows from (prompt text, answer, kind, label, pair) tuples; score follows the label."""
    rows = [{"prompt": [message("user", p)], "completion": message("assistant", a), "kind": kind,
             "score": 1.0 if label in (None, True) else 0.0, "label": label, "pair": pair,
             "source_id": f"t:{i}", "attributes": None} for i, (p, a, kind, label, pair) in enumerate(specs)]
    return build_rows(rows, source="test")


def tokenize(frame: pl.DataFrame, tokenizer: PreTrainedTokenizerBase, **options: object) -> tuple[list[Example], Counter]:
    settings = {"template": None, "max_length": 512, "max_prompt_length": 256, "truncation": "drop", **options}
    return tokenize_split(frame, tokenizer, **settings)


LONG = "Tell me everything about the history of bread, " * 8


def test_examples_are_prefix_tokenized_with_length_masks(tokenizer: PreTrainedTokenizerBase) -> None:
    frame = rows_frame(("What is two plus two?", "Four.", "sft", None, None),
                       ("Name a fruit.", "Apple.", "binary", True, None))
    examples, counts = tokenize(frame, tokenizer)
    assert counts == Counter() and [e.row for e in examples] == [0, 1]
    for example, (prompt, completion) in zip(examples, frame.select("prompt", "completion").iter_rows()):
        prompt_text, whole = render(tokenizer, prompt, completion, None)
        assert list(example.input_ids) == tokenizer(whole, add_special_tokens=False)["input_ids"]
        assert example.prompt_len == len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    assert (examples[1].kind, examples[1].label, examples[1].score) == ("binary", True, 1.0)

    batch = layout(examples, tokenizer.pad_token_id, padding_free=False)
    width = batch.input_ids.shape[1]
    for b, example in enumerate(examples):  # each completion token, predicted from the position before it
        mine = batch.owner == b
        assert batch.targets[mine].tolist() == list(example.input_ids[example.prompt_len:])
        assert batch.where[mine].tolist() == [b * width + t - 1 for t in range(example.prompt_len, len(example.input_ids))]


def test_masks_do_not_depend_on_pad_being_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    frame = rows_frame(("Hi", "Hello there, how can I help?", "sft", None, None), ("Say yes.", "Yes.", "sft", None, None))
    examples, _ = tokenize(frame, tokenizer, template=INST_TEMPLATE)
    eos = tokenizer.eos_token_id
    assert all(e.input_ids[-1] == eos for e in examples)  # the completion's own eos is trained on
    for padding_free in (False, True):
        with_pad = layout(examples, tokenizer.pad_token_id, padding_free=padding_free, attention=1.0)
        with_eos = layout(examples, eos, padding_free=padding_free, attention=1.0)
        for key in ("attention_mask", "position_ids", "where", "targets", "owner", "slot"):
            assert str(getattr(with_pad, key)) == str(getattr(with_eos, key)), key
        short = min(range(len(examples)), key=lambda i: len(examples[i].input_ids))
        # The short row's last target is its own eos, and nothing after it is a target.
        assert with_eos.targets[with_eos.owner == short].tolist()[-1] == eos
        assert int((with_eos.owner == short).sum()) == examples[short].completion_len


def test_prompt_and_completion_are_tokenized_apart(tokenizer: PreTrainedTokenizerBase) -> None:
    """A prompt that is not a token prefix of the whole is kept: its tokens are the generation prompt's."""
    frame = rows_frame(("Hi", "Sure thing.", "sft", None, None))
    examples, counts = tokenize(frame, tokenizer, template=SPACE_TEMPLATE)
    assert counts == Counter() and len(examples) == 1
    prompt = frame["prompt"][0].to_list()
    generation = tokenizer.apply_chat_template(prompt, chat_template=SPACE_TEMPLATE, add_generation_prompt=True,
                                               tokenize=True, return_dict=False)
    completion = tokenizer("Sure thing.\n", add_special_tokens=False)["input_ids"]
    assert list(examples[0].input_ids) == list(generation) + completion
    assert examples[0].prompt_len == len(generation)
    assert tokenizer.convert_ids_to_tokens(generation[-1]) == "Ġ"  # the prompt ends in the space alone


def test_template_whose_prompt_is_not_a_string_prefix_is_an_error(tokenizer: PreTrainedTokenizerBase) -> None:
    shifty = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ 'bot: ' }}{% endif %}")
    with pytest.raises(UftDataError, match=r"model.template.*row 0 \(id .*not a prefix"):
        tokenize(rows_frame(("Hi", "Sure thing.", "sft", None, None)), tokenizer, template=shifty)


def test_too_long_rows_are_dropped_with_their_partner(tokenizer: PreTrainedTokenizerBase) -> None:
    frame = rows_frame(("Short?", "Yes.", "sft", None, None),
                       ("Which?", "A long answer. " * 30, "pairwise", True, 0),
                       ("Which?", "No.", "pairwise", False, 0),
                       (LONG, "Ok.", "score", None, None),
                       ("Again?", "Yes.", "pairwise", True, 1),
                       ("Again?", "No.", "pairwise", False, 1))
    examples, counts = tokenize(frame, tokenizer, max_length=80, max_prompt_length=40)
    assert [e.row for e in examples] == [0, 4, 5]
    assert counts == Counter(too_long=2, partner_dropped=1)


def test_truncate_prompt_left_keeps_the_completion_whole(tokenizer: PreTrainedTokenizerBase) -> None:
    frame = rows_frame((LONG, "Bread is old.", "sft", None, None),
                       ("Hi", "A long answer. " * 30, "sft", None, None),
                       ("Hi", "Short.", "sft", None, None))
    full, _ = tokenize(frame, tokenizer)
    examples, counts = tokenize(frame, tokenizer, max_length=60, max_prompt_length=40, truncation="truncate_prompt_left")
    assert counts == Counter(prompt_truncated=1, too_long=1)
    cut, short = examples
    assert (cut.row, short.row) == (0, 2) and short == full[2]
    assert cut.prompt_len == 40 and cut.completion_len == full[0].completion_len
    assert cut.input_ids == full[0].input_ids[full[0].prompt_len - 40:]


def test_a_pair_missing_its_partner_is_dropped(tokenizer: PreTrainedTokenizerBase) -> None:
    frame = rows_frame(("Which?", "This.", "pairwise", True, 0), ("Which?", "That.", "pairwise", False, 0))
    examples, counts = tokenize(frame.head(1), tokenizer)
    assert examples == [] and counts == Counter(pair_incomplete=1)


def test_kinds_outside_the_loss_are_an_error_listing_counts() -> None:
    frame = rows_frame(*[("q", "a", "sft", None, None)] * 3, ("q", "b", "binary", False, None),
                       ("w", "c", "pairwise", True, 0), ("w", "d", "pairwise", False, 0))
    with pytest.raises(UftDataError) as error:
        check_kinds(frame, {"pairwise"}, None, loss="dpo")
    assert "(binary, sft)" in str(error.value) and "binary: 1, pairwise: 2, sft: 3" in str(error.value)
    assert "data.kinds: [pairwise]" in str(error.value)
    kept, removed = check_kinds(frame, {"pairwise"}, ["pairwise"])
    assert kept["kind"].to_list() == ["pairwise"] * 2 and removed == Counter(sft=3, binary=1)
    assert check_kinds(frame, set(KINDS), None) == (frame, Counter())
    with pytest.raises(UftDataError, match="data.kinds"):
        check_kinds(frame, set(KINDS), ["preference"])


def test_read_split_reads_built_mixtures_only(tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    with open_rows(source) as writer:
        writer.write(rows_frame(*[(f"q{i}", "a", "sft", None, None) for i in range(20)]))
    spec = MixtureSpec((SourceSpec(str(source), parse_take("all", "test"), None),), seed=0, on_short="error", total=None)
    build_mixtures(spec, tmp_path / "mix", Rejects.raising())
    train = read_split(tmp_path / "mix", "train")
    assert train is not None and train.height == 20 and read_split(tmp_path / "mix", "test") is None
    assert read_split(source, "train").height == 20 and read_split(source, "test") is None
    with pytest.raises(UftDataError, match=r"missing/manifest\.json: not found.*uftdata mix r\.yaml"):
        read_split(tmp_path / "missing", "train", recipe=Path("r.yaml"))


# ---- batching: hand-made examples, no tokenizer needed -------------------------------------------

def example(row: int, length: int, *, pair_id: str | None = None, label: bool | None = None,
            kind: str = "sft") -> Example:
    return Example(row, kind, 1.0 if label in (None, True) else 0.0, label, pair_id, "g", tuple(range(3, 3 + length)), 2,
                   f"id{row}", "test")


def mixed(n_single: int = 40, n_pairs: int = 20, seed: int = 0) -> list[Example]:
    """Singles and pairs of lengths 3-200, pairs stored rejected first, interleaved with singles."""
    lengths = random.Random(seed)
    out: list[Example] = []
    for i in range(max(n_single, n_pairs)):
        if i < n_pairs:
            out += [example(len(out), lengths.randint(3, 200), pair_id=f"p{i}", label=False, kind="pairwise"),
                    example(len(out) + 1, lengths.randint(3, 200), pair_id=f"p{i}", label=True, kind="pairwise")]
        if i < n_single:
            out.append(example(len(out), lengths.randint(3, 200)))
    return out


def test_units_keep_pairs_together_chosen_first() -> None:
    examples = mixed(3, 2)
    units = make_units(examples, pairs_as_one_term=True)
    assert [u.rows for u in units] == [(1, 0), (2,), (4, 3), (5,), (6,)]
    assert [u.terms for u in units] == [1, 1, 1, 1, 1]
    assert [u.terms for u in make_units(examples, pairs_as_one_term=False)] == [2, 1, 2, 1, 1]


@pytest.mark.parametrize("pairs_as_one_term", [True, False])
def test_global_batches_are_seeded_and_cover_every_unit_once(pairs_as_one_term: bool) -> None:
    examples = mixed()
    units = make_units(examples, pairs_as_one_term=pairs_as_one_term)
    first = global_batches(examples, units, batch_size=6, seed=3, epoch=0)
    assert first == global_batches(examples, units, batch_size=6, seed=3, epoch=0)
    assert first != global_batches(examples, units, batch_size=6, seed=3, epoch=1)
    assert first != global_batches(examples, units, batch_size=6, seed=4, epoch=0)
    assert all(batch.terms == 6 for batch in first)
    rows = [i for batch in first for i in batch.rows]
    assert len(rows) == len(set(rows))
    # 60 (pairs one term) or 80 terms: the last incomplete batch (0 or 2 terms) is dropped and counted.
    assert len(examples) - len(rows) == (0 if pairs_as_one_term else 2)
    for grouping in (True, False):
        only = global_batches(examples, units, batch_size=1000, seed=0, epoch=0, length_grouping=grouping)
        assert len(only) == 1 and sorted(only[0].rows) == list(range(len(examples)))  # the only batch is kept


@pytest.mark.parametrize("pairs_as_one_term", [True, False])
def test_split_batch_shares_reconstruct_the_batch(pairs_as_one_term: bool) -> None:
    examples = mixed()
    units = make_units(examples, pairs_as_one_term=pairs_as_one_term)
    for batch in global_batches(examples, units, batch_size=8, seed=0, epoch=0):
        for world in (1, 2):
            shares = [split_batch(batch, micro_batch_size=2, world_size=world, rank=r) for r in range(world)]
            assert [i for share in shares for micro in share for i in micro.rows] == list(batch.rows)
            assert len({len(share) for share in shares}) == 1  # same number of backward passes per rank
            for micro in (m for share in shares for m in share):
                rows = set(micro.rows)
                assert rows and all(set(u.rows) <= rows or not set(u.rows) & rows for u in batch.units)
                paired = [micro.rows[i] for pair in micro.pairs for i in pair]
                assert sorted(paired) == sorted(i for i in micro.rows if examples[i].pair_id is not None)
                assert all(examples[micro.rows[c]].label and not examples[micro.rows[r]].label for c, r in micro.pairs)
                if pairs_as_one_term:  # every unit is one term: exact micro-batches
                    assert sum(u.terms for u in batch.units if set(u.rows) <= rows) == 2


def test_split_batch_of_plain_indices() -> None:
    assert split_batch(single_rows(range(8)), micro_batch_size=2, world_size=2, rank=1) == [
        MicroBatch((4, 5), ()), MicroBatch((6, 7), ())]
    assert split_batch(GlobalBatch((Unit((0, 1), 2), Unit((2,), 1))), micro_batch_size=1, world_size=1, rank=0) == [
        MicroBatch((0, 1), ((0, 1),)), MicroBatch((2,), ())]
    with pytest.raises(ValueError, match="cannot be shared by 4 ranks"):
        split_batch(single_rows([0, 1]), micro_batch_size=1, world_size=4, rank=0)


def test_batch_size_problems() -> None:
    assert batch_size_problems(8, 2, 2, pairs_as_one_term=True) == []
    assert batch_size_problems(4, 1, 2, pairs_as_one_term=False) == []
    assert "at least 4" in batch_size_problems(2, 1, 2, pairs_as_one_term=False)[0]
    assert "multiple of the world size 4" in batch_size_problems(6, 1, 4, pairs_as_one_term=True)[0]


def test_padded_layout_shapes_and_fields() -> None:
    examples = [example(7, 5, pair_id="p", label=True, kind="pairwise"), example(8, 3, pair_id="p", label=False, kind="pairwise"),
                example(9, 4, kind="binary", label=False), example(10, 2)]
    batch = layout(examples, pad_id=0, padding_free=False)
    assert batch.attention_mask is not None and batch.position_ids is None
    assert batch.input_ids.shape == batch.attention_mask.shape == (4, 5)
    assert batch.input_ids[1].tolist() == [3, 4, 5, 0, 0]
    assert batch.attention_mask.sum(1).tolist() == [5, 3, 4, 2]
    assert torch.bincount(batch.owner, minlength=4).tolist() == [e.completion_len for e in examples] == [3, 1, 2, 0]
    assert batch.where[batch.owner == 0].tolist() == [1, 2, 3]  # tokens 2, 3, 4 of row 0
    # Pairs are located once, by the units a micro-batch is made of; a row alone is never a pair.
    units = make_units(examples, pairs_as_one_term=False)
    assert split_batch(GlobalBatch(tuple(units)), micro_batch_size=8, world_size=1, rank=0) == [
        MicroBatch((0, 1, 2, 3), ((0, 1),))]


def test_length_grouping_reduces_padding() -> None:
    examples = mixed(300, 100)
    units = make_units(examples, pairs_as_one_term=False)

    def share(grouping: bool) -> float:
        batches = global_batches(examples, units, batch_size=8, seed=0, epoch=0, length_grouping=grouping)
        lengths = [[len(examples[i].input_ids) for i in micro.rows]
                   for batch in batches for micro in split_batch(batch, micro_batch_size=4, world_size=1, rank=0)]
        padded = sum(padded_tokens(micro, padding_free=False) for micro in lengths)
        return padded / (padded + sum(map(sum, lengths)))

    # What is left is mostly inside pairs, whose two rows have unrelated lengths here.
    grouped, ungrouped = share(True), share(False)
    assert grouped < ungrouped / 2, (grouped, ungrouped)
