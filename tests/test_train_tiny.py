"""The project's own tokenizer and tiny model: deterministic, offline, and fit for the chat rows."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import polars as pl
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from uft_train.data import render
from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import SPECIAL_TOKENS, build_tokenizer, load_or_build_tokenizer
from uftdata.cli import app

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return build_tokenizer()


@pytest.fixture(scope="module")
def demo_rows(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The demo mixture (scripts/demo.sh, without the card check), built in-process from data/."""
    out = tmp_path_factory.mktemp("demo")
    commands = [
        ["unfold", str(DATA / "ultrachat.jsonl"), "-o", str(out / "ultrachat.parquet"), "--source", "ultrachat"],
        ["score", str(DATA / "helpsteer2.jsonl"), "-o", str(out / "helpsteer2.parquet"), "--source", "helpsteer2"],
        ["feedback", str(DATA / "hh_rlhf.jsonl"), "-o", str(out / "hh_rlhf.parquet"), "--source", "hh_rlhf"],
        ["feedback", str(DATA / "kto.jsonl"), "-o", str(out / "kto.parquet"), "--source", "kto"],
        ["mix", "-o", str(out / "mix"), *(f"--take={out / name}.parquet=all"
                                         for name in ("ultrachat", "helpsteer2", "hh_rlhf", "kto"))],
    ]
    for command in commands:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            app([*command, "-q"], standalone_mode=False)
    return pl.read_parquet(out / "mix" / "data" / "train-*.parquet")


def test_tokenizer_is_deterministic() -> None:
    assert build_tokenizer().backend_tokenizer.to_str() == build_tokenizer().backend_tokenizer.to_str()
    other = build_tokenizer(["a different corpus, a different vocabulary"] * 10, vocab_size=300)
    assert other.backend_tokenizer.to_str() != build_tokenizer().backend_tokenizer.to_str()


def test_special_tokens_and_round_trip(tokenizer: PreTrainedTokenizerBase) -> None:
    assert len(tokenizer) == 512
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    text = "Héllo, wörld! 3.14 <|user|>naïve 日本語 \t\n tabs"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<|user|>") in ids  # a special token is one id, never split
    assert max(ids) < len(tokenizer)


def test_saved_tokenizer_loads_identical(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    built = load_or_build_tokenizer(tmp_path / "tok")
    loaded = load_or_build_tokenizer(tmp_path / "tok")
    assert loaded.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str() == built.backend_tokenizer.to_str()
    assert loaded.chat_template == tokenizer.chat_template
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_chat_template_prompt_is_a_token_prefix(tokenizer: PreTrainedTokenizerBase, demo_rows: pl.DataFrame) -> None:
    assert set(demo_rows["kind"]) == {"sft", "score", "pairwise", "binary"}
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    for prompt, completion in demo_rows.select("prompt", "completion").iter_rows():
        prompt_text, whole = render(tokenizer, prompt, completion, None)
        assert whole.startswith(prompt_text) and prompt_text.endswith("<|assistant|>")
        p, w = tokenizer([prompt_text, whole], add_special_tokens=False)["input_ids"]
        assert w[:len(p)] == p
        assert w[len(p):][-1] == end and end not in w[len(p):-1]  # the completion's own end-of-turn
        assert tokenizer.decode(w[len(p):]) == completion[0]["content"] + "<|end|>"


def test_tiny_model_forward_and_seed() -> None:
    """147,776 parameters with the defaults and the 512-token tokenizer."""
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == 147_776
    assert next(model.parameters()).dtype == torch.float32
    assert not model.config.tie_word_embeddings and model.config.attention_dropout == 0.0
    ids = torch.randint(0, len(tokenizer), (3, 17))
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (3, 17, len(tokenizer))

    state = torch.random.get_rng_state()
    same = build_tiny_model(tokenizer)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG stream is untouched
    other = build_tiny_model(tokenizer, seed=1)
    for (name, a), b, c in zip(model.state_dict().items(), same.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), name
        if "norm" not in name:  # norms start at ones whatever the seed
            assert not torch.equal(a, c), name
