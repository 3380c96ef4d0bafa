"""FSDP2 does not change the math either (docs/design.md, "Across GPUs"): `torchrun --nproc_per_node 2`
on CPU (gloo) with `train.parallel: fsdp` trains the same steps as one process, from a pretrained
folder read rank by rank on the meta device, and resumes exactly from its checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import forced_bf16
import pytest
import torch
from safetensors.torch import load_file
from test_train_loop import read_metrics, tiny_recipe

import uft_train.step as step
import uft_train.train as train_module
from uft_train import fsdp
from uft_train.config import Recipe, recipe_to_yaml, with_overrides
from uft_train.errors import TrainError
from uft_train.model import add_adapter, load_tokenizer_and_model, lora_config, model_identity
from uft_train.train import train

pytestmark = pytest.mark.usefixtures("one_thread", "cache")  # conftest.py

# Metrics and adapter weights, sharded against one process. float32: only the order of the ranks'
# sums differs. bfloat16 (a bf16 base, bf16 autocast, FSDP's bf16 all-gathers of the float32 LoRA
# weights and float32 reductions; one process: autocast alone): bounded at 1e-4, since bf16 can round
# a differently ordered sum to a neighbour 2^-8 away.
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-4}


def torchrun(recipe: Recipe, folder: Path, *, bf16: bool = False) -> None:
    """`torchrun --nproc_per_node 2 uft-train RECIPE`; `bf16`: with the GPU's bf16 path forced."""
    path = folder / f"{Path(recipe.output.dir).name}.yaml"
    path.write_text(recipe_to_yaml(recipe), encoding="utf-8")
    program = [str(Path(__file__).with_name("forced_bf16.py"))] if bf16 else ["-m", "uft_train.cli"]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *program, str(path)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert done.returncode == 0, done.stderr[-3000:]


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_same_run(one: Path, other: Path, tolerance: float) -> None:
    expected, got = read_metrics(one), read_metrics(other)
    assert [m["step"] for m in got] == [m["step"] for m in expected]
    for a, b in zip(expected, got):
        for key in set(a) - {"tokens_per_s"}:
            assert b[key] == pytest.approx(a[key], rel=0, abs=tolerance), (a["step"], key)
    weights = adapter(one)
    for key, value in adapter(other).items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=tolerance)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of `tiny_recipe`, saved as a Hub model folder is (safetensors, tokenizer)."""
    folder = tmp_path_factory.mktemp("pretrained")
    tokenizer, model = load_tokenizer_and_model(tiny_recipe(folder, folder), None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tied(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny Llama with its LM head tied to its embeddings (Qwen2.5-0.5B to 3B are): the files
    hold the embedding alone."""
    folder = tmp_path_factory.mktemp("tied")
    tokenizer, model = load_tokenizer_and_model(tiny_recipe(folder, folder), None)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_two_sharded_ranks_train_resume_and_agree_with_one_process(pretrained: Path, mixture: Path,
                                                                   tmp_path: Path) -> None:
    """A pretrained base on the meta device, each rank reading its own rows, the adapter drawn as one
    process draws it; gradient checkpointing on; 3 steps of 2 micro-batches per rank. Then the run is
    cut back to its step-1 checkpoint and rerun: it ends on the same adapter, bit for bit."""
    overrides = (f"model.name={pretrained}", "model.gradient_checkpointing=true", "train.parallel=fsdp",
                 "train.batch_size=8", "train.save_every=1")
    sharded = tiny_recipe(mixture, tmp_path / "sharded", *overrides)
    torchrun(sharded, tmp_path)
    one = train(tiny_recipe(mixture, tmp_path / "one", *overrides))
    assert_same_run(one, tmp_path / "sharded", TOLERANCE["float32"])

    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "sharded", resumed)
    for name in ("adapter", "checkpoints/step-000002"):
        shutil.rmtree(resumed / name)
    (resumed / "summary.json").unlink()
    torchrun(with_overrides(sharded, [f"output.dir={resumed}"]), tmp_path)
    assert [m["step"] for m in read_metrics(resumed)] == [1, 2, 3]
    final = adapter(tmp_path / "sharded")
    for key, value in adapter(resumed).items():
        assert torch.equal(value, final[key]), key


def test_sharded_kto_on_the_gpus_bf16_path_with_a_precomputed_reference(mixture: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny model built whole and then sharded, on the bf16 path a GPU takes (forced_bf16.py:
    autocast, and FSDP's mixed-precision policy); KTO's KL rows and the reference cache's forward
    passes run on both ranks together."""
    overrides = ("loss.name=kto", "data.kinds=[sft,binary,pairwise]", "model.dtype=bfloat16",
                 "loss.reference=precompute", "train.max_steps=2", "train.parallel=fsdp")
    torchrun(tiny_recipe(mixture, tmp_path / "sharded", *overrides), tmp_path, bf16=True)
    with monkeypatch.context() as patch:
        patch.setattr(step, "bf16_compute", forced_bf16.bf16_everywhere)
        patch.setattr(train_module, "bf16_compute", forced_bf16.bf16_everywhere)
        one = train(tiny_recipe(mixture, tmp_path / "one", *overrides))
    assert_same_run(one, tmp_path / "sharded", TOLERANCE["bfloat16"])
    filled, hit = (json.loads((tmp_path / name / "data.json").read_text())["reference_cache"] for name in ("sharded", "one"))
    assert filled["misses"] == hit["hits"] > 0 and hit["misses"] == 0  # the ranks filled the store together


def test_the_meta_skeleton_has_the_identity_and_adapter_of_the_loaded_model(pretrained: Path, tmp_path: Path) -> None:
    """What the sharded load computes without the weights in memory equals what one process computes
    from the loaded model: the weights fingerprint (read from the files) and the adapter's draws."""
    recipe = tiny_recipe(tmp_path, tmp_path, f"model.name={pretrained}")
    torch.manual_seed(0)
    tokenizer, whole = load_tokenizer_and_model(recipe, None)
    identity = model_identity(recipe.model, tokenizer, whole)
    expected = add_adapter(whole, recipe, implicit_reward=True)
    torch.manual_seed(0)
    _, skeleton, folder = fsdp.pretrained_skeleton(recipe.model, rank=0, world=1)
    assert all(p.is_meta for p in skeleton.parameters())
    assert model_identity(recipe.model, tokenizer, skeleton, ends=fsdp.file_ends(folder)) == identity
    before = torch.get_rng_state()
    meta = add_adapter(skeleton, recipe, implicit_reward=True)
    drawn = fsdp.drawn_adapter(meta, lora_config(recipe, implicit_reward=True), before)
    trained = {name: p for name, p in expected.named_parameters() if p.requires_grad}
    assert set(drawn) == set(trained) and len(drawn) == 12  # A and B of 3 targets x 2 layers
    for name, value in drawn.items():
        assert torch.equal(value, trained[name].detach()), name
    assert any(value.abs().sum() > 0 for value in drawn.values())


def test_a_stage_one_adapter_is_not_merged_into_a_sharded_base(pretrained: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, tmp_path, f"model.name={pretrained}", f"model.init_adapter={tmp_path}")
    with pytest.raises(TrainError, match="model.init_adapter: cannot be merged into a base sharded over processes"):
        fsdp.pretrained_skeleton(recipe.model, rank=0, world=2)


def test_a_tied_head_is_sharded_with_the_root(tied: Path, mixture: Path, tmp_path: Path) -> None:
    """The head shares the embeddings' unit; the meta skeleton keeps the two one parameter, read once."""
    overrides = (f"model.name={tied}", "train.parallel=fsdp", "train.max_steps=2")
    torchrun(tiny_recipe(mixture, tmp_path / "sharded", *overrides), tmp_path)
    one = train(tiny_recipe(mixture, tmp_path / "one", *overrides))
    assert_same_run(one, tmp_path / "sharded", TOLERANCE["float32"])
    _, skeleton, _ = fsdp.pretrained_skeleton(tiny_recipe(tmp_path, tmp_path, *overrides).model, rank=0, world=1)
    assert skeleton.get_output_embeddings().weight is skeleton.get_input_embeddings().weight
