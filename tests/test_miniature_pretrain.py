"""The base model folder: trained a few steps, loadable the way the trainer loads `model.name: <folder>`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from uft_miniature.base import prepare_base, tokenizer_texts
from uft_miniature.pretrain import SIZES, learning_rate, terminated
from uft_miniature.world import WorldConfig, build_world, pretraining_corpus
from uft_train.tokenizer import END_OF_TURN, build_tokenizer


def test_tiny_pretrain_saves_a_loadable_cached_folder(tmp_path: Path) -> None:
    world = build_world(WorldConfig(entities=20, max_operand=4))
    lines: list[str] = []
    folder = prepare_base(world, tmp_path, SIZES["tiny"], log=lines.append)
    assert folder.parent == tmp_path and folder.name.startswith("base-")
    assert lines[-1].startswith("pretrain step 3/3  loss ")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "pretrain.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert set(model.generation_config.eos_token_id) == {tokenizer.eos_token_id, end}
    assert len(tokenizer) == model.config.vocab_size == SIZES["tiny"].vocab_size
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "Bramo lives in which city?"}],
                                             tokenize=False, add_generation_prompt=True)
    assert rendered == "<|user|>Bramo lives in which city?<|end|><|assistant|>"
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["steps"] == 3 and len(record["losses"]) == 3 and record["parameters"] > 0
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[end, 10, 11]])).logits).all()

    # the same inputs reuse the folder; trained again elsewhere, they give the same weights
    again: list[str] = []
    assert prepare_base(world, tmp_path, SIZES["tiny"], log=again.append) == folder
    assert again == [f"pretrain: reusing {folder}"]
    elsewhere = prepare_base(world, tmp_path / "other", SIZES["tiny"], log=again.append)
    assert elsewhere.name == folder.name
    for name in ("model.safetensors", "tokenizer.json"):
        assert (elsewhere / name).read_bytes() == (folder / name).read_bytes()


def test_learning_rate_schedule() -> None:
    """Linear warmup to lr, cosine down to lr * min_lr_ratio at the last step."""
    cfg = SIZES["default"]
    assert learning_rate(0, cfg) == pytest.approx(cfg.lr / cfg.warmup_steps)
    assert learning_rate(cfg.warmup_steps - 1, cfg) == pytest.approx(cfg.lr)
    assert learning_rate(cfg.steps, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


def test_a_document_ends_in_one_end_of_turn() -> None:
    """A chat transcript already ends in its last turn's `<|end|>`; packing must not add a second."""
    assert terminated("Bramo lives in Tesk.") == "Bramo lives in Tesk.<|end|>"
    chat = "<|user|>Bramo lives in which city?<|end|><|assistant|>Bramo lives in Tesk.<|end|>"
    assert terminated(chat) == chat


def test_default_vocabulary_makes_every_name_one_token() -> None:
    """PretrainConfig.vocab_size's claim, on the tokenizer `pretrain_base` trains for the default world."""
    world = build_world(WorldConfig())
    train, _ = pretraining_corpus(world)
    tokenizer = build_tokenizer([*train, *tokenizer_texts(world)], vocab_size=SIZES["default"].vocab_size)
    names = [e.name for e in world.entities + world.dialogue_entities]
    assert len(names) == 480
    assert [n for n in names if len(tokenizer(n, add_special_tokens=False)["input_ids"]) != 1] == []
