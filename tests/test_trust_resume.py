"""Resume tells the truth, and the trainer stops before it trains on the wrong thing (issue "Trust").

A rerun that finds a checkpoint continues it only with the same recipe (logging and saving aside), the
same rows and the same model; `output.overwrite=true` starts afresh, and only a folder holding uft's
`run.json` is ever reused or removed. A split that tokenization would thin out past
`data.max_drop_share`, a device the machine lacks or a model that cannot be loaded stop the run
before it writes anything. Each refusal is one line and exit status 2 (tests/corpus.py).

One interrupted run (killed before its 4th step: checkpoint at step 2, steps 1-3 logged) is made
once and copied for each test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from corpus import assert_one_line, leftovers, snapshot, uft_train
from test_train_loop import RUN_FILES, Stop, files, read_metrics, stop_before, tiny_recipe

import uft_train.model as model_module
from uft_train.config import load_recipe, recipe_to_yaml
from uft_train.train import train
from uftdata import __version__
from uftdata.atomic import lock_name

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

RESUMABLE = ("train.max_steps=4", "train.save_every=2")


def write_recipe(path: Path, mixture: Path, run_dir: Path, *overrides: str) -> Path:
    path.write_text(recipe_to_yaml(tiny_recipe(mixture, run_dir, *overrides)), encoding="utf-8")
    return path


def interrupt(recipe_path: Path) -> Path:
    """Train the recipe until it dies before its 4th step; returns the run folder."""
    recipe = load_recipe(recipe_path)
    with pytest.MonkeyPatch.context() as patch:
        stop_before(patch, 3)
        with pytest.raises(Stop):
            train(recipe)
    return Path(recipe.output.dir)


@pytest.fixture(scope="module")
def interrupted(one_thread: None, mixture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("interrupted")
    return interrupt(write_recipe(root / "recipe.yaml", mixture, root / "run", *RESUMABLE))


@pytest.fixture
def resumable(interrupted: Path, mixture: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(recipe file, run folder): a copy of the interrupted run, under another output.dir (a moved
    run folder is the same run)."""
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted, run_dir)
    return write_recipe(tmp_path / "recipe.yaml", mixture, run_dir, *RESUMABLE), run_dir


def refused(argv: list[str], cwd: Path, *parts: str) -> str:
    """Exit 2 with one line holding `parts`, `cwd` (every input and output) untouched, nothing left behind."""
    before = snapshot(cwd)
    code, out, err = uft_train(argv, cwd)
    line = assert_one_line(code, out, err, *parts, prog="uft-train")
    assert snapshot(cwd) == before
    assert leftovers(cwd) == []
    return line


# --- a rerun with other settings, data or model ---------------------------------------------------------

def test_corpus_another_setting_is_refused_listing_each_key(resumable: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, run_dir = resumable
    checkpoint = run_dir / "checkpoints" / "step-000002"
    line = refused([str(recipe), "optim.lr=0.05", "train.max_steps=6", "train.log_every=2"], tmp_path)
    assert line == (f"uft-train: error: {checkpoint}: belongs to a run with other settings, data or model "
                    "(optim.lr: 0.01 -> 0.05; train.max_steps: 4 -> 6). To resume it, rerun with the values of "
                    f"{checkpoint / 'recipe.yaml'}. Set output.overwrite=true to start over, or choose another "
                    "output.dir.")


def test_corpus_a_second_run_on_the_same_folder_is_stopped_by_the_lock(resumable: tuple[Path, Path],
                                                                      tmp_path: Path) -> None:
    recipe_path, run_dir = resumable
    # A live run's lock: a child that sleeps, so its PID is alive for the whole test.
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            lock_name(run_dir).write_text(f"{child.pid}\n")
            before = snapshot(tmp_path)
            code, out, err = uft_train([str(recipe_path)], tmp_path)
            assert_one_line(code, out, err, f"{run_dir}: another process (PID {child.pid}) is writing it",
                            prog="uft-train")
            assert snapshot(tmp_path) == before
        finally:
            child.kill()


def test_logging_settings_may_change_and_the_run_says_it_resumed(resumable: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    recipe, run_dir = resumable
    code, out, err = uft_train([str(recipe), "train.log_every=2", "train.eval_every=1"], tmp_path)
    assert code == 0, err
    assert f"resumed at step 2 of 4 (checkpoint {run_dir / 'checkpoints' / 'step-000002'})" in out.splitlines()
    saved = load_recipe(run_dir / "recipe.yaml")  # what ran: the new logging values
    assert (saved.train.log_every, saved.train.eval_every) == (2, 1)
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # step 3 ran again, logged once
    assert ["eval/loss" in m for m in metrics] == [False, False, True, True]
    checkpoint = run_dir / "checkpoints" / "step-000002"
    assert files(run_dir) == RUN_FILES | {f"checkpoints/step-000002/{f}" for f in files(checkpoint)}
    assert leftovers(tmp_path) == []


def test_corpus_other_rows_under_the_same_path_are_refused(mixture: Path, tmp_path: Path) -> None:
    """Plain Parquet data: the rows read are hashed, so data edited in place is seen."""
    data = tmp_path / "data.parquet"
    rows = pl.read_parquet(sorted(mixture.rglob("train-*.parquet")))
    rows.write_parquet(data)
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run", *RESUMABLE, f"data.path={data}")
    interrupt(recipe)
    rows.filter(pl.col("kind") != "pairwise").write_parquet(data)
    before = snapshot(tmp_path)
    code, out, err = uft_train([str(recipe)], tmp_path)
    note = f"uft-train: note: {data} is a plain Parquet file, not a verified mixture"
    assert out.startswith(note)  # said on stdout on every run from a plain file; stderr holds the error alone
    line = assert_one_line(code, out, err, "checkpoints/step-000002: belongs to a run with other "
                           "settings", "(data.content_hash: ", " -> ", "). To resume it", prog="uft-train")
    assert line.count(" -> ") == 1
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_corpus_another_model_is_refused(resumable: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, _ = resumable
    refused([str(recipe), "model.tiny.hidden_size=64"], tmp_path, "(model.tiny.hidden_size: 32 -> 64)")
    # The same recipe, other base weights (as a Hub model updated under its name): the fingerprint
    # of the loaded model differs, and nothing of the recipe does.
    monkeypatch.setattr(model_module, "TINY_BASE_SEED", 1)
    line = refused([str(recipe)], tmp_path, "(model.weights_sha256: ")
    assert line.count(" -> ") == 1


def test_corpus_a_checkpoint_that_does_not_say_what_it_was_is_not_resumed(resumable: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """A checkpoint of an older uft-train (no identity.json) is refused, not resumed on a guess: its
    recipe.yaml alone cannot tell whether the data or the model changed."""
    recipe, run_dir = resumable
    checkpoint = run_dir / "checkpoints" / "step-000002"
    (checkpoint / "identity.json").unlink()
    line = refused([str(recipe)], tmp_path)
    assert line == (f"uft-train: error: {checkpoint}: has no identity.json: it cannot be checked against this run "
                    "(written by an older uft-train, or damaged), so it is not resumed. Set output.overwrite=true "
                    "to start over, or choose another output.dir.")


# --- output.overwrite and folders that are not run folders ----------------------------------------------

def test_overwrite_discards_the_checkpoints_and_starts_at_step_0(resumable: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    recipe, run_dir = resumable
    (run_dir / "notes.txt").write_text("inside the run folder: discarded with it\n")
    code, out, err = uft_train([str(recipe), "output.overwrite=true", "optim.lr=0.05"], tmp_path)
    assert code == 0, err
    assert "resumed" not in out
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4]
    assert load_recipe(run_dir / "recipe.yaml").optim.lr == 0.05
    assert load_recipe(run_dir / "checkpoints" / "step-000002" / "recipe.yaml").optim.lr == 0.05  # saved anew
    assert not (run_dir / "notes.txt").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_corpus_a_folder_that_is_not_a_run_folder_is_never_used(overwrite: bool, mixture: Path,
                                                                tmp_path: Path) -> None:
    """Not even with output.overwrite: only a folder holding run.json is ours (before, any folder
    holding an adapter/ was removed). An older run folder, without run.json, is refused the same way."""
    folder = tmp_path / "mine"
    (folder / "adapter").mkdir(parents=True)
    (folder / "thesis.tex").write_text("months of work\n")
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, folder)
    line = refused([str(recipe), f"output.overwrite={str(overwrite).lower()}"], tmp_path)
    assert line == (f"uft-train: error: {folder}: is not empty and holds no run.json: it is not a uft run folder, "
                    "and uft-train neither writes into nor removes it. Choose another output.dir (a run folder of "
                    "an older uft-train: remove it yourself).")


def test_corpus_a_file_as_output_dir_is_refused(mixture: Path, tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file\n")
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    refused([str(recipe)], tmp_path, f"{tmp_path / 'run'}: is not a folder. Choose another output.dir.")


# --- stops before training: drops, device, model ------------------------------------------------------

def test_corpus_a_split_losing_more_than_max_drop_share_stops_before_training(mixture: Path, tmp_path: Path) -> None:
    """The demo mixture loses 2 of its 129 training rows to the tiny recipe's lengths (1.6%): under the
    default (0.4) it trains; with 0.01 it stops, naming the split, its share and the reasons. The
    drops are printed first, split by split; no run folder is made."""
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    before = snapshot(tmp_path)
    code, out, err = uft_train([str(recipe), "data.max_drop_share=0.01"], tmp_path)
    line = assert_one_line(code, out, err, prog="uft-train")
    assert line == (f"uft-train: error: {mixture}: the train split would lose 2 of its 129 rows (1.6%: too_long 2), "
                    "more than data.max_drop_share 0.01. Raise data.max_length / data.max_prompt_length, set "
                    "data.truncation=truncate_prompt_left, or raise data.max_drop_share.")
    assert out.splitlines() == [f"data: {mixture}",
                                "  train: 129 rows -> 127 examples; dropped 2 (1.6%): too_long 2; prompt_truncated 0",
                                "  test: 16 rows -> 16 examples; dropped 0 (0.0%); prompt_truncated 0"]
    assert snapshot(tmp_path) == before


def test_corpus_short_lengths_stop_naming_both_splits(mixture: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    refused([str(recipe), "data.max_length=96", "data.max_prompt_length=64"], tmp_path,
            f"{mixture}: the train split would lose ", "too_long", "; the test split would lose ",
            "more than data.max_drop_share 0.4. Raise data.max_length")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps"])
def test_corpus_a_device_the_machine_lacks_is_one_line(device: str, mixture: Path, tmp_path: Path) -> None:
    kind = device.partition(":")[0]
    if kind == "cuda" and torch.cuda.device_count() > int(device.partition(":")[2] or 0):
        pytest.skip(f"this machine has {device}")
    if kind == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    line = refused([str(recipe), f"train.device={device}"], tmp_path, f"train.device: {device}: ",
                   ". Set train.device=auto (the GPU when there is one, else the CPU) or train.device=cpu.")
    if kind == "cuda" and not torch.cuda.is_available():
        assert "no cuda device is available on this machine" in line
    if kind == "cuda" and not torch.version.cuda:
        assert f"(this torch {torch.__version__} is built without CUDA)" in line


@pytest.mark.parametrize("name, setup, what", [
    ("./models/none", None, "no such folder"),
    ("models/no-config", "weights.bin", "has no config.json: it is not a saved model"),
    ("models/pickles", "config.json", "has no *.safetensors weights (uft-train loads safetensors only, never pickles)"),
])
def test_corpus_a_local_model_that_cannot_be_loaded_is_one_line(name: str, setup: str | None, what: str,
                                                                mixture: Path, tmp_path: Path) -> None:
    if setup is not None:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / setup).write_text("{}\n")
        (tmp_path / name / "pytorch_model.bin").write_bytes(b"not loaded")
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    refused([str(recipe), f"model.name={name}"], tmp_path, f"uft-train: error: model.name: {name}: {what}. ")


def test_corpus_a_hub_model_not_cached_offline_is_one_line(mixture: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, when huggingface_hub was imported
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run")
    line = refused([str(recipe), "model.name=uft-tests/no-such-model"], tmp_path)
    assert line == ("uft-train: error: model.name: uft-tests/no-such-model: is not in the local Hugging Face cache "
                    "and HF_HUB_OFFLINE forbids downloading it. Download it once where there is network "
                    "(hf download uft-tests/no-such-model), or set model.name to a local folder.")


def test_version(tmp_path: Path) -> None:
    assert uft_train(["--version"], tmp_path) == (0, f"uft-train {__version__}\n", "")


# --- kill -9 ------------------------------------------------------------------------------------------

KILLED_AT_STEP_4 = """
import sys, time
import uft_train.train as t
step = t.train_step
def slow(run, batch, i):
    if i == 3:
        print("step 4 began", flush=True)
        time.sleep(300)
    return step(run, batch, i)
t.train_step = slow
from uft_train.cli import main
main(sys.argv[1:])
"""


def test_corpus_kill_9_during_training_then_a_rerun_finishes_the_same_run(mixture: Path, tmp_path: Path) -> None:
    """A real process killed during step 4 (checkpoint at step 2, step 3 logged): the rerun resumes
    from the checkpoint and ends with the adapter of an uninterrupted run, byte for byte."""
    recipe = write_recipe(tmp_path / "recipe.yaml", mixture, tmp_path / "run", *RESUMABLE)
    process = subprocess.Popen([sys.executable, "-c", KILLED_AT_STEP_4, str(recipe)], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        for line in process.stdout:
            if line == "step 4 began\n":
                break
        else:
            pytest.fail(f"the run ended before step 4: {process.stderr.read()[-2000:]}")
    finally:
        process.kill()
        process.communicate()
    run_dir = tmp_path / "run"
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]
    assert not (run_dir / "adapter").exists()

    code, out, err = uft_train([str(recipe)], tmp_path)
    assert code == 0, err
    assert f"resumed at step 2 of 4 (checkpoint {run_dir / 'checkpoints' / 'step-000002'})" in out.splitlines()
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4]
    assert leftovers(tmp_path) == []

    straight = train(tiny_recipe(mixture, tmp_path / "straight", *RESUMABLE))
    adapter = "adapter/adapter_model.safetensors"
    assert (run_dir / adapter).read_bytes() == (straight / adapter).read_bytes()
    assert json.loads((run_dir / "run.json").read_text())["format"] == "uft-train run folder"
