"""DDP does not change the math (docs/design.md, "Reduction"): `torchrun --nproc_per_node 2` on CPU (gloo)
trains the same steps as one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train_loop import RUN_FILES, files, read_metrics, tiny_recipe

import uft_train.train as train_module
from uft_train.config import RecipeError, recipe_to_yaml
from uft_train.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py



@pytest.mark.parametrize("loss, kinds", [("una_mse", []), ("kto", ["data.kinds=[sft,binary,pairwise]"])])
def test_two_ranks_train_what_one_process_trains(loss: str, kinds: list[str], mixture: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Global batch 4 = 2 ranks x 1 micro-batch of 2 terms, or 1 process x 2 micro-batches: the same
    rows in the same micro-batches, so every step's metrics (per kind and KTO's all-reduced KL too)
    agree; only the summation order of the gradients differs."""
    monkeypatch.setenv("UFT_CACHE", str(tmp_path / "cache"))
    overrides = ("train.max_steps=2", f"loss.name={loss}", *kinds)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(recipe_to_yaml(tiny_recipe(mixture, tmp_path / "ddp", *overrides)), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "uft_train.cli", str(recipe_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"run: {tmp_path / 'ddp'}" in done.stdout

    one = train(tiny_recipe(mixture, tmp_path / "one", *overrides))
    ddp = tmp_path / "ddp"
    assert files(ddp) == files(one) == RUN_FILES
    expected, got = read_metrics(one), read_metrics(ddp)
    assert [m["step"] for m in got] == [1, 2]
    for a, b in zip(expected, got):
        assert set(a) == set(b)
        for key in set(a) - {"tokens_per_s"}:
            assert b[key] == pytest.approx(a[key], rel=0, abs=1e-5), (a["step"], key)
    weights = [load_file(folder / "adapter" / "adapter_model.safetensors") for folder in (one, ddp)]
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], rtol=0, atol=1e-5)


def test_a_batch_the_ranks_cannot_share_is_refused_before_training(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The recipe loader checks the sizes for one process; train() checks them for the world size."""
    monkeypatch.setattr(train_module, "setup_distributed", lambda: (0, 3))
    # pairs as two row terms: each rank needs a whole pair; refused before the data is read
    recipe = tiny_recipe(tmp_path / "mix", tmp_path / "run", "loss.pairwise=rows")
    with pytest.raises(RecipeError) as info:
        train(recipe)
    assert info.value.problems == ("torchrun with 3 processes: train.batch_size must be at least 6 (got 4): each "
                                   "of 3 rank(s) needs at least one pair (2 terms: this loss trains each row of a pair)",)
    assert not (tmp_path / "run").exists()
