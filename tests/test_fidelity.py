"""Trainer fidelity (issue 11): what a user with another base model or another data source would hit.

Each test here failed on the code before its fix (commit 9b9714d)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from uft_train import cli
from uft_train.config import recipe_from_mapping
from uft_train.data import Example
from uft_train.model import add_adapter, reference, sequence_logps
from uft_train.objective import Terms
from uft_train.stats import StepStats
from uft_train.tokenizer import build_tokenizer
from uftdata import schema


def _base_with_dropout(tokenizer: PreTrainedTokenizerBase, p: float) -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, attention_dropout=p,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def _batch(tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([tokenizer("the cat sat on the mat and looked at the dog")["input_ids"]] * 2)
    mask = torch.ones_like(ids)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 4:] = True
    return ids, mask, loss_mask


def test_dropout_of_the_base_is_off_for_losses_with_a_reference() -> None:
    """A base with attention dropout 0.1: in train mode (the policy and the online reference) the
    log-probs equal eval mode's (the cached reference), and the implicit reward is 0 at step 0."""
    tokenizer = build_tokenizer()
    recipe = recipe_from_mapping({"loss": {"name": "una_mse"}, "data": {"path": "x"}}, "test")
    model = add_adapter(_base_with_dropout(tokenizer, 0.1), recipe, implicit_reward=True)
    ids, mask, loss_mask = _batch(tokenizer)
    model.train()
    torch.manual_seed(1)
    policy = sequence_logps(model, ids, mask, loss_mask)
    with torch.no_grad(), reference(model):
        online = sequence_logps(model, ids, mask, loss_mask)
    model.eval()
    with torch.no_grad(), reference(model):
        cached = sequence_logps(model, ids, mask, loss_mask)
    assert torch.equal(policy.detach(), online) and torch.equal(online, cached)
    assert all(m.p == 0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert model.get_base_model().config.attention_dropout == 0.0


def test_sft_keeps_the_base_dropout() -> None:
    """Without a reference nothing has to agree with anything: the base's dropout is the user's choice."""
    tokenizer = build_tokenizer()
    recipe = recipe_from_mapping({"loss": {"name": "sft"}, "data": {"path": "x"}}, "test")
    model = add_adapter(_base_with_dropout(tokenizer, 0.1), recipe, implicit_reward=False)
    ids, mask, loss_mask = _batch(tokenizer)
    model.train()
    torch.manual_seed(1)
    first = sequence_logps(model, ids, mask, loss_mask)
    second = sequence_logps(model, ids, mask, loss_mask)
    assert not torch.equal(first, second)
    assert model.get_base_model().config.attention_dropout == 0.1


def _rows_file(path: Path, rows: list[dict]) -> Path:
    """A plain Parquet file in the row schema written with pyarrow, bypassing uftdata's checks."""
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.SCHEMA), path)
    return path


def _row(kind: str, score: float, **extra: object) -> dict:
    text = f"{kind} {score}"
    return {"id": hashlib.md5(text.encode()).hexdigest(), "prompt": [{"role": "user", "content": text}],
            "completion": [{"role": "assistant", "content": "ok"}], "score": score, "kind": kind,
            "label": None, "pair_id": None, "source": "s", "source_id": text, "group": "0" * 32, "turn": 0,
            "attributes": None, **extra}


@pytest.mark.parametrize(("rows", "bad", "field", "what"), [
    ([_row("sft", 1.0), _row("sft", 0.5)], 1, "score", "must be 1 on sft rows"),
    ([_row("score", 0.5), _row("score", 4.0)], 1, "score", "outside [0, 1]"),
    ([_row("binary", 0.0, label=True), _row("binary", 1.0)], 1, "label", "set for binary and pairwise rows"),
])
def test_targets_are_checked_where_the_trainer_reads_them(tmp_path: Path, rows: list[dict], bad: int, field: str,
                                                          what: str, capsys: pytest.CaptureFixture[str]) -> None:
    """UFT Eq. 7 and the score range rest on the trainer's check, not on the data: a plain Parquet
    `data.path` with an sft row of score 0.5 or a score row of 4.0 stops with one line naming the
    row, its id and the field, exit 2, before a model loads."""
    file = _rows_file(tmp_path / "rows.parquet", rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  path: {file}\n  kinds: null\noutput:\n  dir: {tmp_path / 'run'}\n")
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(recipe)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"rows.parquet: row {bad} (id {rows[bad]['id']}): field '{field}'" in err and what in err
    assert not (tmp_path / "run").exists()


def test_per_kind_loss_is_in_the_step_loss_unit() -> None:
    """sft's step loss is summed NLL per completion token: two rows of 3 and 5 completion tokens with
    summed NLLs 6 and 10 give loss/sft = 16 / 8 = 2.0 (before: 8.0, the mean per row); a loss whose
    denominator is terms keeps the mean per term."""
    def example(kind: str, completion: int) -> Example:
        return Example(0, kind, 1.0, None, None, "g", tuple(range(2 + completion)), 2, "i", "s")

    rows = [example("sft", 3), example("sft", 5)]
    terms = Terms(torch.tensor([6.0, 10.0]), ("sft", "sft"), None, ())
    stats = StepStats()
    stats.add(terms, rows)
    assert stats.by_kind("tokens") == {"loss/sft": 2.0}
    assert stats.by_kind("terms") == {"loss/sft": 8.0}
    assert stats.loss_sum / stats.tokens_completion == 2.0  # the step loss of sft, the same unit
