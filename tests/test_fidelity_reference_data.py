"""Issue 11, items 1 and 2: every dropout off when the loss has a reference (the base's too), and
the targets checked wherever uft-train reads rows (a plain Parquet `data.path` and a verified mixture).

Each test that names a defect failed on the code before its fix (commit 9b9714d); see the report of
the change for which."""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from corpus import assert_one_line, uft_train
from test_train_loop import read_metrics, tiny_recipe
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

import uft_train.tiny as tiny_module
from uft_train.config import recipe_from_mapping
from uft_train.logps import from_masks, sequence_logps
from uft_train.model import add_adapter
from uft_train.step import Run, forward, reference_logps
from uft_train.tokenizer import build_tokenizer
from uft_train.train import train
from uftdata import schema
from uftdata.cli import app

pytestmark = pytest.mark.usefixtures("one_thread", "cache")  # conftest.py

BASE_DROPOUT = 0.1


@pytest.fixture
def dropout_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model the trainer loads (`model.name: tiny`, `uft_train.tiny.build_tiny_model`), built
    with attention dropout 0.1 as another base model's config may ship it."""
    def config(**kwargs: object) -> LlamaConfig:
        return LlamaConfig(**{**kwargs, "attention_dropout": BASE_DROPOUT})

    monkeypatch.setitem(tiny_module.ARCHITECTURES, "llama", (config, LlamaForCausalLM))


def _dropouts(model: torch.nn.Module) -> dict[str, float]:
    """Every nonzero dropout probability of `model`: nn.Dropout modules, module attributes and config
    fields whose names end in `dropout` or `_pdrop`."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            found[f"{name}.p"] = module.p
        for holder, prefix in ((module, name), (getattr(module, "config", None), f"{name}.config")):
            for key, value in (vars(holder).items() if holder is not None else ()):
                if key.endswith(("dropout", "_pdrop")) and isinstance(value, (int, float)) and value > 0:
                    found[f"{prefix}.{key}"] = float(value)
    return found


# --- 1. dropout ----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("dropout_base")
def test_a_base_with_dropout_gives_zero_reward_at_step_0_and_online_equals_cached(
        mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """The trainer's own path (load, LoRA, `forward`, the reference cache) on a base with attention
    dropout 0.1: the policy in train mode equals the online reference (r = 0 bitwise at step 0), and
    the online reference (train mode) equals the cached one (eval mode). Before: r != 0 by ~0.07
    nats and online and cached differed by ~0.06."""
    online_dir = train(tiny_recipe(mixture, tmp_path / "online", "train.max_steps=1"))
    precompute_dir = train(tiny_recipe(mixture, tmp_path / "cached", "train.max_steps=1", "loss.reference=precompute"))
    rewards = {k: v for k, v in read_metrics(online_dir)[0].items() if k.startswith("reward/")}
    assert rewards and set(rewards.values()) == {0.0}, rewards
    # The cache computes each row alone, a step packs its units: float32 noise only.
    cached_rewards = {k: v for k, v in read_metrics(precompute_dir)[0].items() if k.startswith("reward/")}
    assert cached_rewards.keys() == rewards.keys()
    assert all(abs(v) < 1e-5 for v in cached_rewards.values()), cached_rewards

    run = runs[-1]
    assert run.refs is not None and run.refs.misses > 0
    assert _dropouts(run.model) == {}
    assert run.model.get_base_model().config.attention_dropout == 0.0
    # Online, as a step computes it (train mode), and cached (eval mode), each row alone as the cache does.
    run.model.train()
    for example in run.train[:8]:
        online = reference_logps(run, run.layout([example]))
        cached = run.refs.lookup([example])
        assert torch.equal(online, cached), (online, cached)
        assert bool((online < 0).all())
    # A fresh policy (LoRA B = 0) in train mode is its own online reference, bitwise.
    fresh = runs[0]
    assert fresh.recipe.loss.reference == "online"
    fresh.model.get_base_model().load_state_dict(run.model.get_base_model().state_dict())  # the base: same
    for module in fresh.model.modules():
        if hasattr(module, "lora_B"):
            for weight in module.lora_B.values():
                torch.nn.init.zeros_(weight.weight)
    fresh.model.train()
    policy, reference = forward(fresh, run.train[:8], grad=False, cached_reference=False)
    assert reference is not None and torch.equal(policy, reference)


@pytest.mark.usefixtures("dropout_base")
def test_sft_keeps_the_base_dropout(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """sft has no reference, so nothing must agree with anything: the base config's dropout stays."""
    train(tiny_recipe(mixture, tmp_path / "run", "train.max_steps=1", "loss.name=sft", "data.kinds=[sft]"))
    model = runs[0].model
    assert model.get_base_model().config.attention_dropout == BASE_DROPOUT
    assert {k for k in _dropouts(model) if k.endswith("attention_dropout")}  # the config's and each layer's


def _gpt2() -> PreTrainedModel:
    """A base with `nn.Dropout` modules and `*_pdrop` config fields (GPT-2: embd, attn, resid 0.1)."""
    tokenizer = build_tokenizer()
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return GPT2LMHeadModel(config)


@pytest.mark.parametrize(("loss", "off"), [("una_mse", True), ("dpo", True), ("kto", True), ("sft", False)])
def test_every_dropout_module_and_config_field_is_off_for_a_reference_loss(loss: str, off: bool) -> None:
    """`nn.Dropout` modules (p = 0.1 each) and config fields (`resid_pdrop`, `embd_pdrop`,
    `attn_pdrop`, `summary_first_dropout`) are 0 after `add_adapter` for a loss with a reference,
    and train-mode log-probs equal eval-mode ones; sft keeps them all."""
    base = _gpt2()
    assert len(_dropouts(base)) > 5
    recipe = recipe_from_mapping({"loss": {"name": loss}, "data": {"path": "x"},
                                  "lora": {"targets": ["c_attn"]}}, "test")
    with pytest.warns(UserWarning, match="fan_in_fan_out"):  # peft on GPT-2's Conv1D; not ours
        model = add_adapter(base, recipe, implicit_reward=off)
    assert (_dropouts(model) == {}) == off
    if not off:
        assert model.get_base_model().config.resid_pdrop == pytest.approx(0.1)
        return
    ids = torch.arange(3, 19).reshape(2, 8)
    mask, loss_mask = torch.ones_like(ids), torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 3:] = True
    model.train()
    train_mode = sequence_logps(model, from_masks(ids, mask, loss_mask))
    model.eval()
    assert torch.equal(train_mode.detach(), sequence_logps(model, from_masks(ids, mask, loss_mask)))


# --- 2. targets ----------------------------------------------------------------------------------------

def _row(kind: str, score: float, label: bool | None = None, pair_id: str | None = None, n: int = 0) -> dict:
    text = f"{kind} {score} {label} {pair_id} {n}"
    return {"id": hashlib.md5(text.encode()).hexdigest(), "prompt": [{"role": "user", "content": f"question {n}"}],
            "completion": [{"role": "assistant", "content": f"answer {text}"}], "score": score, "kind": kind,
            "label": label, "pair_id": pair_id, "source": "s", "source_id": text,
            "group": hashlib.md5(str(n).encode()).hexdigest(), "turn": 0, "attributes": None}


def _write(path: Path, rows: list[dict]) -> Path:
    """Rows in the row schema written with pyarrow: no uftdata check on the way."""
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.SCHEMA), path)
    return path


GOOD = [_row("sft", 1.0, n=1), _row("score", 0.25, n=2), _row("binary", 0.0, False, n=3)]
BAD_ROWS: dict[str, tuple[dict, str, str]] = {
    "sft_score_half": (_row("sft", 0.5), "score", "must be 1 on sft rows"),
    "score_four": (_row("score", 4.0), "score", "outside [0, 1]"),
    "score_nan": (_row("score", float("nan")), "score", "outside [0, 1]"),
    "binary_no_label": (_row("binary", 1.0), "label", "set for binary and pairwise rows"),
    "score_with_label": (_row("score", 0.5, True), "label", "must be null for sft and score rows"),
    "pairwise_no_pair_id": (_row("pairwise", 1.0, True), "pair_id", "must be set exactly on pairwise rows"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_plain_parquet_with_a_bad_target_exits_2_naming_row_id_and_field(case: str, tmp_path: Path) -> None:
    """`data.path` a plain Parquet file written without uftdata: an sft row of score 0.5, a score row
    of 4.0, ... stop the run before a model loads: one line, the file, the row, its id, the field."""
    row, field, what = BAD_ROWS[case]
    data = _write(tmp_path / "rows.parquet", [*GOOD, row])
    (tmp_path / "r.yaml").write_text(f"data:\n  path: {data}\n  kinds: null\noutput:\n  dir: {tmp_path / 'run'}\n")
    line = assert_one_line(*uft_train(["r.yaml", "train.device=cpu"], tmp_path),
                           f"{data}: row 3 (id {row['id']}): field '{field}'", what, prog="uft-train")
    assert "Traceback" not in line
    assert not (tmp_path / "run").exists()


def _without_the_sft_rule(rules: Callable[[], list]) -> Callable[[], list]:
    return lambda: [rule for rule in rules() if "sft rows" not in rule[1]]


def test_a_verified_mixture_with_an_sft_row_of_score_half_exits_2(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A mixture built by a uftdata that did not know "sft rows score 1" (simulated: the rule left out
    while mixing) verifies against its manifest, and the trainer still refuses its sft row of 0.5,
    naming the shard, the row, its id and the field."""
    bad = _row("sft", 0.5, n=9)
    source = _write(tmp_path / "rows.parquet", [*GOOD, bad])
    with monkeypatch.context() as older:
        older.setattr(schema, "_target_checks", _without_the_sft_rule(getattr(schema, "_target_checks", list)),
                      raising=False)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            app(["mix", "-o", str(tmp_path / "mix"), f"--take={source}=all", "-q"], standalone_mode=False)
    (shard,) = sorted((tmp_path / "mix" / "data").glob("train-*.parquet"))
    row = pq.read_table(shard, columns=["id"]).column("id").to_pylist().index(bad["id"])
    (tmp_path / "r.yaml").write_text(f"data:\n  path: {tmp_path / 'mix'}\n  kinds: null\n"
                                     f"output:\n  dir: {tmp_path / 'run'}\n")
    assert_one_line(*uft_train(["r.yaml", "train.device=cpu"], tmp_path),
                    f"{shard}: row {row} (id {bad['id']}): field 'score'", "must be 1 on sft rows", prog="uft-train")
    assert not (tmp_path / "run").exists()


def test_target_problems_are_row_problems_on_the_target_columns() -> None:
    """One set of rules: `target_problems` is `row_problems` restricted to score/kind/label/pair_id."""
    rows = pl.from_arrow(pa.Table.from_pylist([*GOOD, *(r for r, _, _ in BAD_ROWS.values())], schema=schema.SCHEMA))
    assert isinstance(rows, pl.DataFrame)
    targets = schema.target_problems(rows.select("id", "score", "kind", "label", "pair_id"))
    every = schema.row_problems(rows).filter(pl.col("field").is_in(["score", "kind", "label", "pair_id"]))
    assert targets.rows() == every.rows()
    assert targets["row"].to_list() == [3, 4, 5, 6, 7, 8]


def test_sub_configs_dropouts_are_off_too() -> None:
    """A multimodal base keeps its language model's config as a sub-config (`text_config`) that no
    module may hold: its dropouts are set to 0 as well."""
    from uft_train.tiny import build_tiny_model

    base = build_tiny_model(build_tokenizer(), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    base.config.text_config = GPT2Config(resid_pdrop=0.1, attn_pdrop=0.1)
    recipe = recipe_from_mapping({"loss": {"name": "una_mse"}, "data": {"path": "x"}}, "test")
    model = add_adapter(base, recipe, implicit_reward=True)
    text = model.get_base_model().config.text_config
    assert (text.resid_pdrop, text.attn_pdrop, text.embd_pdrop) == (0.0, 0.0, 0.0)
