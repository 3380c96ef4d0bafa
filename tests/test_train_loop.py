"""End-to-end `uft-train` runs: a 2-layer, 32-wide tiny Llama trained for a few steps on the demo
mixture (built once from data/). As STYLE.md asks, each run is checked for LoRA weights that moved,
base weights that did not, and the exact files it writes; then step-0 rewards, resume, the reference
cache, a non-finite loss, export and the command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import uft_train.train as train_module
from uft_train import cli
from uft_train.batching import GlobalBatch
from uft_train.config import Recipe, load_recipe, recipe_from_mapping, recipe_to_yaml, resolved, with_overrides
from uft_train.data import Example
from uft_train.errors import TrainError
from uft_train.kl import derangement, swap_completion
from uft_train.logps import from_masks, layout, sequence_logps
from uft_train.loss_table import get_loss
from uft_train.model import add_adapter, load_tokenizer_and_model, reference
from uft_train.step import Run, row_key
from uft_train.train import train
from uftdata.cli import app

DATA = Path(__file__).resolve().parents[1] / "data"

# Every file a finished run writes (peft adds the adapter's model card, README.md); the final
# evaluation's rewards too, when the loss has an implicit reward and the run a test split.
RUN_FILES = {
    "adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
    "data.json", "eval_predictions.parquet", "metrics.jsonl", "recipe.yaml", "run.json", "summary.json",
    "tokenizer/chat_template.jinja", "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json",
}
# sft has no implicit reward; dpo keeps pairwise rows only, and the demo's test split has none.
NO_PREDICTIONS = {"sft", "dpo"}
CHECKPOINT_FILES = {"adapter/README.md", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                    "identity.json", "recipe.yaml", "step.json", "trainer_state.pt"}
EXPORT_FILES = {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                "tokenizer.json", "tokenizer_config.json", "uft_export.json"}
STEP_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "padding_share"}

# Each loss on the kinds it trains (docs/design.md, "Loss x kind"); una_* take the whole mixture.
LOSS_KINDS = {"una_mse": [], "una_bce": [], "dpo": ["data.kinds=[pairwise]"],
              "kto": ["data.kinds=[sft,binary,pairwise]"], "sft": ["data.kinds=[sft]"]}


def build_demo_mixture(out: Path) -> Path:
    """The demo mixture of scripts/demo.sh (sft, score, pairwise and binary rows; a test split of
    HelpSteer2's validation file and 10% of UltraChat), built in-process from data/."""
    sources = {"ultrachat": "unfold", "helpsteer2": "score", "helpsteer2_validation": "score",
               "hh_rlhf": "feedback", "kto": "feedback"}
    commands = [[command, str(DATA / f"{name}.jsonl"), "-o", str(out / f"{name}.parquet"),
                 "--source", name.removesuffix("_validation")] for name, command in sources.items()]
    commands.append(["mix", "-o", str(out / "mix"),
                     *(f"--take={out / name}.parquet=all" for name in ("ultrachat", "helpsteer2", "hh_rlhf", "kto")),
                     f"--test={out / 'helpsteer2.parquet'}={out / 'helpsteer2_validation.parquet'}",
                     f"--test={out / 'ultrachat.parquet'}=0.1"])
    for command in commands:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            app([*command, "-q"], standalone_mode=False)
    return out / "mix"


def tiny_recipe(mixture: Path, out: Path, *overrides: str) -> Recipe:
    """Three steps of 4 terms in micro-batches of 2, on a tiny Llama; lr and beta far above the
    paper's so three steps move the adapter visibly."""
    recipe = recipe_from_mapping({
        "model": {"name": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                                           "intermediate_size": 64}},
        "lora": {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj", "down_proj"]},
        "data": {"path": str(mixture), "max_length": 512, "max_prompt_length": 384},
        "loss": {"name": "una_mse", "beta": 0.1},
        "optim": {"lr": 1e-2},
        "train": {"max_steps": 3, "batch_size": 4, "micro_batch_size": 2, "device": "cpu"},
        "output": {"dir": str(out)},
    }, "test recipe")
    return with_overrides(recipe, overrides)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}



pytestmark = pytest.mark.usefixtures("one_thread", "cache")  # conftest.py


def fresh_adapter(recipe: Recipe, tokenizer_dir: Path) -> torch.nn.Module:
    """The policy exactly as `train()` builds it before the first step."""
    torch.manual_seed(recipe.train.seed)
    _, base = load_tokenizer_and_model(recipe, tokenizer_dir)
    return add_adapter(base, recipe, implicit_reward=get_loss(recipe.loss.name).needs_reference)


# --- one run per loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("loss", list(LOSS_KINDS))
def test_a_run_moves_lora_keeps_the_base_and_writes_its_files(loss: str, mixture: Path, tmp_path: Path,
                                                               runs: list[Run]) -> None:
    recipe = tiny_recipe(mixture, tmp_path / "run", f"loss.name={loss}", *LOSS_KINDS[loss])
    run_dir = train(recipe)
    assert files(run_dir) == (RUN_FILES - {"eval_predictions.parquet"} if loss in NO_PREDICTIONS else RUN_FILES)
    assert load_recipe(run_dir / "recipe.yaml") == resolved(recipe)  # the run folder keeps the resolved recipe
    assert json.loads((run_dir / "data.json").read_text())["total_steps"] == 3

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    kinds = set(get_loss(loss).kinds)
    for m in metrics:
        assert STEP_KEYS <= set(m) and all(math.isfinite(m[k]) for k in STEP_KEYS)
        by_kind = {k.partition("/")[2] for k in m if k.startswith("loss/")}
        assert by_kind and by_kind <= kinds
        if loss != "sft":  # implicit-reward losses log the mean reward of every kind they train
            assert {k.partition("/")[2] for k in m if k.startswith("reward/")} == by_kind
    # The lr each step used: one warmup step (ceil(0.1 x 3)), then cosine over the other two.
    assert [m["lr"] for m in metrics] == pytest.approx([1e-2, 1e-2, 5e-3])
    final_eval = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    assert all(k.startswith("eval/") and math.isfinite(v) for k, v in final_eval.items())

    # LoRA moved: B leaves zero, A leaves its seeded init; what was saved is what was trained.
    initial = get_peft_model_state_dict(fresh_adapter(recipe, run_dir / "tokenizer"))
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert saved.keys() == initial.keys() and len(saved) == 2 * 2 * 3  # A and B x layers x targets
    for key, value in saved.items():
        assert not torch.equal(value, initial[key]), key
        if "lora_B" in key:
            assert not initial[key].any()
    trained = runs[0].model
    for key, value in get_peft_model_state_dict(trained).items():
        assert torch.equal(value, saved[key]), key

    # The base did not: frozen, and equal to a freshly built base.
    untouched = dict(fresh_adapter(recipe, run_dir / "tokenizer").named_parameters())
    for name, param in trained.named_parameters():
        assert param.requires_grad == ("lora_" in name), name
        if "lora_" not in name:
            assert torch.equal(param, untouched[name]), name


# --- the implicit reward at step 0 ------------------------------------------------------------------

def test_policy_equals_reference_at_step_0(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """LoRA B starts at zero and dropout is off, so r = beta * (logp_policy - logp_ref) = 0 exactly
    for every row: step 1's rewards are 0 and its loss is the loss at r = 0 (sigmoid(r) = 0.5):
    una_mse = mean((0.5 - score)^2) over the batch's rows (pairs as rows, to count every row)."""
    run_dir = train(tiny_recipe(mixture, tmp_path / "run", "loss.pairwise=rows"))
    first = read_metrics(run_dir)[0]
    rewards = {k: v for k, v in first.items() if k.startswith("reward/")}
    assert rewards and set(rewards.values()) == {0.0}
    run = runs[0]
    scores = [run.train[i].score for i in run.batches(0)[0].rows]
    assert first["loss"] == pytest.approx(sum((0.5 - s) ** 2 for s in scores) / len(scores), abs=1e-7)

    # Directly: a fresh policy and its reference give the same log-probs on real rows.
    model = fresh_adapter(run.recipe, run_dir / "tokenizer").eval()
    batch = layout(run.train[:8], run.pad_id)
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        with reference(model):
            ref = sequence_logps(model, batch)
    assert torch.equal(policy, ref)
    assert bool((policy < 0).all())  # real log-probs, not an empty mask


@pytest.mark.parametrize("loss, at_step_0", [("una_bce", math.log(2)), ("dpo", math.log(2)), ("kto", 0.5)])
def test_first_step_loss_is_the_loss_at_zero_reward(loss: str, at_step_0: float, mixture: Path,
                                                    tmp_path: Path) -> None:
    """At r = 0: una_bce = -[s log 1/2 + (1 - s) log 1/2] = log 2 for any score; dpo = -log sigmoid(0)
    = log 2; kto (weights 1, KL = 0) = 1 - sigmoid(0) = 1/2."""
    run_dir = train(tiny_recipe(mixture, tmp_path / "run", f"loss.name={loss}", *LOSS_KINDS[loss]))
    first = read_metrics(run_dir)[0]
    assert first["loss"] == pytest.approx(at_step_0, abs=1e-6)
    assert all(v == 0.0 for k, v in first.items() if k.startswith("reward/") or k == "kto_kl")


# --- resume -----------------------------------------------------------------------------------------

class Stop(Exception):
    """Stands for the process being killed."""


def stop_before(monkeypatch: pytest.MonkeyPatch, index: int) -> None:
    """Make the loop die as it starts the step of 0-based `index` (a kill, not a clean stop)."""
    step = train_module.train_step

    def dying(run: Run, batch: GlobalBatch, i: int) -> dict:
        if i == index:
            raise Stop
        return step(run, batch, i)

    monkeypatch.setattr(train_module, "train_step", dying)


@pytest.mark.parametrize("loss", ["una_mse", "kto"])
def test_resume_continues_the_same_trajectory(loss: str, mixture: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """4 steps straight == 4 steps killed after step 3 (checkpoint at step 2, step 3 already logged)
    and rerun: the same schedule, batches, KTO partners and optimizer state, so the same losses,
    and each step logged once."""
    common = (f"loss.name={loss}", *LOSS_KINDS[loss], "train.max_steps=4", "train.save_every=2")
    straight = read_metrics(train(tiny_recipe(mixture, tmp_path / "straight", *common)))

    recipe = tiny_recipe(mixture, tmp_path / "resumed", *common)
    with monkeypatch.context() as patch:
        stop_before(patch, 3)
        with pytest.raises(Stop):
            train(recipe)
    run_dir = Path(recipe.output.dir)
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]
    assert not (run_dir / "adapter").exists()
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"step-000002"}
    assert files(run_dir / "checkpoints" / "step-000002") == CHECKPOINT_FILES

    resumed = read_metrics(train(recipe))
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(straight, resumed):
        for key in ("loss", "lr", "grad_norm"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), (a["step"], key)
    final = [load_file(tmp_path / name / "adapter" / "adapter_model.safetensors") for name in ("straight", "resumed")]
    for key in final[0]:
        torch.testing.assert_close(final[1][key], final[0][key], rtol=0, atol=1e-6)


def test_a_finished_run_is_kept_unless_overwrite(mixture: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(mixture, tmp_path / "run", "train.save_every=2")
    run_dir = train(recipe)
    with pytest.raises(TrainError, match="holds a finished run"):
        train(recipe)
    train(with_overrides(recipe, ["output.overwrite=true", "train.save_every=null"]))
    assert files(run_dir) == RUN_FILES  # a fresh run: no old checkpoint resumed, no metrics appended
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]


# --- reference cache --------------------------------------------------------------------------------

def test_reference_cache_miss_then_hit(mixture: Path, tmp_path: Path, cache: Path, runs: list[Run]) -> None:
    """The first precompute run computes every row (losses as online's), the second finds them all and
    writes nothing; another data.max_length is another store (tests/test_refcache.py: the rest)."""
    online = [m["loss"] for m in read_metrics(train(tiny_recipe(mixture, tmp_path / "online")))]

    def precomputed(name: str, *overrides: str) -> tuple[list[float], Path, int]:
        run_dir = train(tiny_recipe(mixture, tmp_path / name, "loss.reference=precompute", *overrides))
        refs = runs[-1].refs
        assert refs is not None and refs.hits + refs.misses == len({row_key(e) for e in runs[-1].train})
        return [m["loss"] for m in read_metrics(run_dir)], refs.store, refs.misses

    first, store, misses = precomputed("first")
    assert misses > 0 and store.parent == cache / "refs"
    assert first == pytest.approx(online, abs=1e-5)
    before = sorted((store / "segments").iterdir())
    second, same, misses = precomputed("second")
    assert (same, misses) == (store, 0) and sorted((store / "segments").iterdir()) == before
    assert second == first
    _, other, misses = precomputed("longer", "data.max_length=500")
    assert misses > 0 and other != store


# --- a loss that is not finite ----------------------------------------------------------------------

def test_a_nan_loss_stops_with_the_step_and_a_checkpoint(mixture: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(mixture, tmp_path / "run")
    step = train_module.train_step
    terms = train_module.micro_batch_terms
    current = {"step": -1}

    def tracking(run: Run, batch: GlobalBatch, i: int) -> dict:
        current["step"] = i
        return step(run, batch, i)

    def poisoned(*args: object, **kwargs: object):  # noqa: ANN202
        out = terms(*args, **kwargs)
        return dataclasses.replace(out, values=out.values * math.nan) if current["step"] == 1 else out

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "train_step", tracking)
        patch.setattr(train_module, "micro_batch_terms", poisoned)
        with pytest.raises(TrainError, match="step 2: the loss is not finite") as info:
            train(recipe)
    run_dir = Path(recipe.output.dir)
    assert str(run_dir / "checkpoints") in info.value.line()
    assert [m["step"] for m in read_metrics(run_dir)] == [1]
    checkpoint = run_dir / "checkpoints" / "step-000001"
    assert files(checkpoint) == CHECKPOINT_FILES
    assert json.loads((checkpoint / "step.json").read_text()) == {"step": 1}
    weights = load_file(checkpoint / "adapter" / "adapter_model.safetensors")
    assert all(bool(w.isfinite().all()) for w in weights.values())
    assert any(bool(w.any()) for k, w in weights.items() if "lora_B" in k)  # step 1's update, kept

    # Fixed, the run goes on from the last good step.
    assert [m["step"] for m in read_metrics(train(recipe))] == [1, 2, 3]


# --- export and the command line --------------------------------------------------------------------

def test_export_merges_the_adapter_into_a_plain_model(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    run_dir = train(tiny_recipe(mixture, tmp_path / "run"))
    out = tmp_path / "export"
    with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(io.StringIO()):
        cli.main(["export", str(run_dir), "-o", str(out)])
    assert info.value.code == 0
    assert files(out) == EXPORT_FILES

    run = runs[0]
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    trained = run.model.eval()
    batch = layout(run.train[:8], run.pad_id, padding_free=False)
    with torch.no_grad():
        logits = exported(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        expected = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with reference(trained):
            base = trained(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert (logits - base).abs().max() > 1e-4  # the adapter is in there

    tokenizer = AutoTokenizer.from_pretrained(out)
    saved = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    assert tokenizer.chat_template == saved.chat_template
    text = "<|user|>How long should I boil an egg?<|end|><|assistant|>"
    assert tokenizer(text)["input_ids"] == saved(text)["input_ids"]


def test_export_of_an_unfinished_run_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "out")])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"uft-train: error: {tmp_path / 'nothing' / 'adapter'}: holds no finished adapter. Export a run that completed."]
    assert not (tmp_path / "out").exists()


def test_cli_trains_a_recipe_file_and_prints_the_report(mixture: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(recipe_to_yaml(tiny_recipe(mixture, tmp_path / "run")), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        cli.main([str(recipe_path), "train.max_steps=2", "loss.beta=0.2"])
    assert info.value.code == 0
    run_dir = tmp_path / "run"
    lines = capsys.readouterr().out.splitlines()
    # The data report comes first, before training.
    assert lines[:3] == [f"data: {mixture}",
                         "  train: 129 rows -> 127 examples; dropped 2 (1.6%): too_long 2; prompt_truncated 0",
                         "  test: 16 rows -> 16 examples; dropped 0 (0.0%); prompt_truncated 0"]
    lines = lines[3:]
    assert lines[:3] == [f"run: {run_dir}", f"  adapter: {run_dir / 'adapter'}",
                         f"  metrics: {run_dir / 'metrics.jsonl'}"]
    metrics = read_metrics(run_dir)
    assert lines[3].startswith(f"  steps 2: loss {metrics[0]['loss']:.4f} -> {metrics[1]['loss']:.4f}; ")
    final_eval = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    assert lines[4:-1] == [f"  {k}: {v:.4f}" for k, v in sorted(final_eval.items())]
    assert lines[-1] == f"  figures: uft-train report {run_dir}"
    assert load_recipe(run_dir / "recipe.yaml").loss.beta == 0.2  # the overrides reached the run
    assert files(run_dir) == RUN_FILES


def test_the_fixture_is_the_demo_mixture(mixture: Path) -> None:
    """The fixture is the demo mixture: every kind, and a test split."""
    manifest = json.loads((mixture / "manifest.json").read_text())
    assert set(manifest["counts"]["train"]["by_kind"]) == {"sft", "score", "pairwise", "binary"}
    assert manifest["counts"]["test"]["rows"] > 0


def test_second_stage_merges_stage_1_and_starts_at_zero_reward(mixture: Path, tmp_path: Path,
                                                                runs: list[Run]) -> None:
    """SFT -> UNA: the stage-1 adapter is merged into the base in memory and a fresh adapter is
    trained on top, so the reference is the SFT model: step 1's rewards are 0 again, while the
    merged base differs from the plain base (stage 1 moved it)."""
    sft_dir = train(tiny_recipe(mixture, tmp_path / "sft", "loss.name=sft", "data.kinds=[sft]"))
    second = tiny_recipe(mixture, tmp_path / "una", f"model.init_adapter={sft_dir / 'adapter'}")
    run_dir = train(second)
    first = read_metrics(run_dir)[0]
    rewards = {k: v for k, v in first.items() if k.startswith("reward/")}
    assert rewards and set(rewards.values()) == {0.0}
    merged = runs[-1].model.get_base_model()
    plain = fresh_adapter(tiny_recipe(mixture, tmp_path / "plain"), run_dir / "tokenizer").get_base_model()
    name = "model.layers.0.self_attn.q_proj.base_layer.weight"
    assert not torch.equal(dict(merged.named_parameters())[name], dict(plain.named_parameters())[name])


def test_tensorboard_gets_the_step_metrics(mixture: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the optional tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = train(tiny_recipe(mixture, tmp_path / "run", "output.tensorboard=true"))
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    losses_logged = [e.value for e in events.Scalars("loss")]
    assert losses_logged == pytest.approx([m["loss"] for m in read_metrics(run_dir)], rel=1e-6)


def test_tensorboard_without_the_package_is_a_clear_error(mixture: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(TrainError, match="output.tensorboard: needs the tensorboard package"):
        train(tiny_recipe(mixture, tmp_path / "run", "output.tensorboard=true"))


def test_kto_evaluation_uses_a_real_kl_over_a_derangement_of_the_test_split(mixture: Path, tmp_path: Path,
                                                                            runs: list[Run]) -> None:
    """eval/kto_kl is the clamped mean log-ratio of each test prompt with its partner's completion in
    the derangement seeded by train.seed, recomputed here row by row on the trained model (not 0 as
    before), so eval/loss is the training objective."""
    recipe = tiny_recipe(mixture, tmp_path / "run", "loss.name=kto", *LOSS_KINDS["kto"], "train.eval_every=3")
    run_dir = train(recipe)
    logged = [m for m in read_metrics(run_dir) if "eval/kto_kl" in m][-1]["eval/kto_kl"]
    run = runs[0]
    run.model.eval()
    partners = derangement(len(run.test), seed=recipe.train.seed)
    ratios = []
    for i, j in enumerate(partners):
        prompt, completion = run.test[i], run.test[j]
        ids = (prompt.input_ids[:prompt.prompt_len] + completion.input_ids[completion.prompt_len:])[:512]
        input_ids = torch.tensor([ids])
        loss_mask = torch.arange(len(ids))[None] >= prompt.prompt_len
        with torch.no_grad():
            policy = sequence_logps(run.model, from_masks(input_ids, torch.ones_like(input_ids), loss_mask))
            with reference(run.model):
                ref = sequence_logps(run.model, from_masks(input_ids, torch.ones_like(input_ids), loss_mask))
        ratios.append(float(policy - ref))
    # float32 sums over batched, padded rows vs one row at a time: equal to about 1e-5 relative
    assert logged == pytest.approx(max(0.0, sum(ratios) / len(ratios)), rel=1e-4)
    assert logged > 0  # three steps at lr 1e-2 move the policy: a kl of 0 would be the old constant


def test_kl_rows_keep_max_length() -> None:
    """A partner's long completion is cut at its end: prompt + borrowed completion <= data.max_length."""
    def example(prompt: int, completion: int, start: int) -> Example:
        ids = tuple(range(start, start + prompt + completion))
        return Example(0, "binary", 1.0, True, None, "g", ids, prompt, "i", "s")
    short_prompt, long_completion = example(3, 2, 0), example(2, 10, 100)
    row = swap_completion(short_prompt, long_completion, max_length=8)
    assert row.input_ids == (0, 1, 2, 102, 103, 104, 105, 106) and row.prompt_len == 3
    assert swap_completion(short_prompt, example(2, 4, 100), max_length=8).input_ids == (0, 1, 2, 102, 103, 104, 105)
