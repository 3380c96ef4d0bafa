"""Real architectures: tiny Llama, Mistral and Qwen2 models (uft_train/tiny.py) trained end to end by
`train()` in float32 and bfloat16, with gradient checkpointing on and off, and `model.attn_implementation`.

A covering design, not the cross product: each architecture in both dtypes, checkpointing on in one
of them and off in the other (so each dtype has it on and off), and every case checks the four
things that break first on a new architecture or dtype: a finite loss, the implicit reward exactly 0
at step 0, online and precomputed references agreeing, and an interrupted + resumed run equal to an
uninterrupted one, bitwise. Each run is 3 DPO steps on the demo mixture's pairwise rows (no test
split, so no evaluation) with the project tokenizer.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_loop import Stop, read_metrics, stop_before, tiny_recipe

from uft_train.config import Recipe, load_recipe, recipe_to_yaml, with_overrides
from uft_train.errors import TrainError
from uft_train.model import load_tokenizer_and_model, model_fingerprint, unwrapped
from uft_train.step import Run
from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import build_tokenizer
from uft_train.train import train
from uftdata.problems import RecipeError

pytestmark = pytest.mark.usefixtures("one_thread", "cache")  # conftest.py

# (architecture, dtype, gradient checkpointing): every architecture in both dtypes, checkpointing
# on and off twice each, and in each dtype on for one architecture and off for another.
CASES = [("llama", "float32", False), ("llama", "bfloat16", True),
         ("mistral", "float32", True), ("mistral", "bfloat16", False),
         ("qwen2", "float32", False), ("qwen2", "bfloat16", True)]
DPO = ("loss.name=dpo", "data.kinds=[pairwise]", "train.save_every=2")


def arch_recipe(mixture: Path, out: Path, architecture: str, dtype: str, checkpointing: bool, *more: str) -> Recipe:
    return tiny_recipe(mixture, out, *DPO, f"model.tiny.architecture={architecture}", f"model.dtype={dtype}",
                       f"model.gradient_checkpointing={str(checkpointing).lower()}", *more)


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("architecture, dtype, checkpointing", CASES)
def test_each_architecture_trains_resumes_and_matches_its_cached_reference(
        architecture: str, dtype: str, checkpointing: bool, mixture: Path, tmp_path: Path, runs: list[Run],
        monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = arch_recipe(mixture, tmp_path / "straight", architecture, dtype, checkpointing)
    straight = read_metrics(train(recipe))
    model = unwrapped(runs[-1].model)
    base = model.get_base_model()
    assert type(base).__name__ == {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                   "qwen2": "Qwen2ForCausalLM"}[architecture]
    assert base.model.embed_tokens.weight.dtype == getattr(torch, dtype)  # the base really is in `dtype`
    assert base.is_gradient_checkpointing == checkpointing
    assert base.config._attn_implementation == "sdpa"

    # Finite, and at step 0 the policy is its reference: r = 0 exactly and dpo = -log sigmoid(0) = log 2.
    assert [m["step"] for m in straight] == [1, 2, 3]
    assert all(math.isfinite(m[k]) for m in straight for k in ("loss", "grad_norm"))
    assert straight[0]["reward/pairwise"] == 0.0
    assert straight[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert straight[-1]["loss"] < math.log(2)  # lr 1e-2: three steps move it
    # Every adapter moved, in every layer: checkpointing kept the gradients flowing to all of them.
    assert all(bool(w.any()) for k, w in adapter(tmp_path / "straight").items() if "lora_B" in k)

    # The cached reference (computed once, in eval mode, over other batches) gives the same losses.
    cached = read_metrics(train(arch_recipe(mixture, tmp_path / "cached", architecture, dtype, checkpointing,
                                            "loss.reference=precompute")))
    # Measured: 1.5e-6 in float32, 1.1e-5 in bfloat16 (the cache's micro-batches pack other rows together).
    tolerance = 1e-5 if dtype == "float32" else 1e-4
    assert [m["loss"] for m in cached] == pytest.approx([m["loss"] for m in straight], abs=tolerance)

    # Killed as step 3 starts (checkpoint at step 2) and rerun: the same trajectory, bitwise, in both
    # dtypes (the same kernels on the same inputs in the same order on CPU).
    resumed_recipe = arch_recipe(mixture, tmp_path / "resumed", architecture, dtype, checkpointing)
    with monkeypatch.context() as patch:
        stop_before(patch, 2)
        with pytest.raises(Stop):
            train(resumed_recipe)
    resumed = read_metrics(train(resumed_recipe))
    assert [(m["step"], m["loss"], m["grad_norm"]) for m in resumed] == \
        [(m["step"], m["loss"], m["grad_norm"]) for m in straight]
    final, again = adapter(tmp_path / "straight"), adapter(tmp_path / "resumed")
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)


def test_tiny_mistral_trains_with_mistral_s_real_tokenizer(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """Mistral-7B-v0.1's 32,000-piece tokenizer (from the mistral-common package) on a tiny Mistral:
    the vocabulary sizes the model, and the run starts at r = 0 and trains."""
    pytest.importorskip("mistral_common", reason="mistral-common (Mistral-7B-v0.1's tokenizer) is not installed")
    recipe = arch_recipe(mixture, tmp_path / "run", "mistral", "bfloat16", True, "model.tiny.tokenizer=mistral")
    metrics = read_metrics(train(recipe))
    assert unwrapped(runs[-1].model).get_base_model().config.vocab_size == 32_000
    assert metrics[0]["reward/pairwise"] == 0.0 and metrics[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(math.isfinite(m["loss"]) for m in metrics) and metrics[-1]["loss"] < math.log(2)


def test_architectures_build_what_they_say() -> None:
    """Llama and Mistral share parameters and so, seeded alike, weights; Qwen2 adds q/k/v biases
    (3 x 32 per layer), drawn and nonzero. Mistral's sliding window is the position range; each
    seed is reproducible and dropout is 0 everywhere."""
    tokenizer = build_tokenizer()
    shape = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}
    llama, mistral, qwen2 = (build_tiny_model(tokenizer, architecture=a, **shape)
                             for a in ("llama", "mistral", "qwen2"))
    count = sum(p.numel() for p in llama.parameters())
    assert sum(p.numel() for p in mistral.parameters()) == count
    assert sum(p.numel() for p in qwen2.parameters()) == count + 2 * 3 * 32
    assert all(torch.equal(a, b) for a, b in zip(llama.state_dict().values(), mistral.state_dict().values()))
    assert mistral.config.sliding_window == 512 and mistral.config.tie_word_embeddings is False
    biases = {n: p for n, p in qwen2.named_parameters() if n.endswith("bias")}
    assert sorted({n.split(".")[-2] for n in biases}) == ["k_proj", "q_proj", "v_proj"]
    assert all(bool(p.abs().gt(0).all()) for p in biases.values())
    again = build_tiny_model(tokenizer, architecture="qwen2", **shape)
    assert all(torch.equal(a, b) for a, b in zip(qwen2.state_dict().values(), again.state_dict().values()))
    for model in (llama, mistral, qwen2):
        assert model.config.attention_dropout == 0.0 and not model.config.tie_word_embeddings

    # The sliding-window path is in use: with a window shorter than the sequence, the last position's
    # logits change (the first position's cannot); at the position range they do not.
    ids = torch.randint(0, len(tokenizer), (1, 40))
    short = build_tiny_model(tokenizer, architecture="mistral", max_position_embeddings=16, **shape)
    with torch.no_grad():
        full, windowed = llama(input_ids=ids).logits, short(input_ids=ids).logits
        assert torch.allclose(full[0, 0], windowed[0, 0], atol=1e-6)
        assert not torch.allclose(full[0, -1], windowed[0, -1], atol=1e-3)
        torch.testing.assert_close(mistral(input_ids=ids).logits, full, rtol=0, atol=1e-5)


def test_eager_attention_matches_sdpa_and_keys_the_reference_cache(mixture: Path, tmp_path: Path) -> None:
    """`model.attn_implementation` reaches the model; eager and sdpa give the same log-probs to
    float32 rounding; and the reference-cache key changes with the architecture and the kernel."""
    recipe = arch_recipe(mixture, tmp_path / "run", "qwen2", "float32", False)
    eager = with_overrides(recipe, ["model.attn_implementation=eager"])
    _, sdpa_model = load_tokenizer_and_model(recipe, None)
    _, eager_model = load_tokenizer_and_model(eager, None)
    assert eager_model.config._attn_implementation == "eager"
    ids = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(eager_model(input_ids=ids).logits, sdpa_model(input_ids=ids).logits,
                                   rtol=0, atol=1e-5)
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    keys = [model_fingerprint(r, folder) for r in (
        recipe, eager, with_overrides(recipe, ["model.tiny.architecture=mistral"]),
        with_overrides(recipe, ["model.tiny.architecture=llama"]))]
    assert len({repr(k) for k in keys}) == 4


@pytest.mark.parametrize("implementation", ["flash_attention_2", "flash_attention_3"])
def test_flash_attention_on_cpu_or_uninstalled_is_one_line(implementation: str, mixture: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Asked for on train.device cpu: the recipe's own check (uft-train --dry-run sees it).
    with pytest.raises(RecipeError, match=f"model.attn_implementation: runs on CUDA GPUs only.*{implementation}"):
        arch_recipe(mixture, tmp_path / "run", "llama", "float32", False, f"model.attn_implementation={implementation}")

    # train.device auto on a machine without CUDA: one line at load, before the run folder is made.
    recipe = arch_recipe(mixture, tmp_path / "run", "llama", "float32", False, "train.device=auto",
                         f"model.attn_implementation={implementation}")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError) as info:
        train(recipe)
    line = info.value.line()
    assert f"model.attn_implementation: {implementation}" in line and "CUDA" in line and "=sdpa" in line
    assert not (tmp_path / "run").exists()

    # On a CUDA machine without flash-attn (or flash-attn-3) and kernels: the package to install.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("flash_attn", "flash_attn_interface", "kernels")
                        else real(name, *a))
    with pytest.raises(TrainError) as info:
        load_tokenizer_and_model(recipe, None)
    package = {"flash_attention_2": "flash-attn", "flash_attention_3": "flash-attn-3"}[implementation]
    assert f"pip install {package}" in info.value.line()


def test_the_recipe_keys_round_trip(tmp_path: Path) -> None:
    recipe = with_overrides(Recipe(), ["model.tiny.architecture=mistral", "model.attn_implementation=eager",
                                       "data.path=mix"])
    (tmp_path / "r.yaml").write_text(recipe_to_yaml(recipe), encoding="utf-8")
    loaded = load_recipe(tmp_path / "r.yaml")
    assert (loaded.model.tiny.architecture, loaded.model.attn_implementation) == ("mistral", "eager")
    assert (Recipe().model.tiny.architecture, Recipe().model.attn_implementation) == ("llama", "sdpa")
