"""Shared fixtures."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from uft_train.step import Run

# The installed console script: on PATH in an activated venv, else beside this interpreter.
UFTDATA = shutil.which("uftdata") or str(Path(sys.executable).with_name("uftdata"))

# Real records of the public datasets (see its SOURCES.md); read in place, never copied into the repo.
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"real-data samples not found at {SAMPLES_DIR}")
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo mixture of data/ (sft, score, pairwise and binary rows, a test split), built once and
    only read by the training tests (a module that needs another mixture defines its own)."""
    from test_train_loop import build_demo_mixture

    return build_demo_mixture(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: a 32-wide model gains nothing from more, and spinning OpenMP threads make
    these runs several times slower while another process holds one of the two cores (torchrun gives
    each rank one thread too). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A reference cache (`UFT_CACHE`) of the test's own. Training modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread", "cache")`."""
    monkeypatch.setenv("UFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """The `Run` of every `train()` call in the test, kept after the loop ends (the trained model)."""
    import uft_train.train as train_module  # here, so that collecting the torch-free tests loads no trainer

    captured: list[Run] = []
    loop = train_module.run_loop

    def spy(run: Run, *args: object) -> None:
        captured.append(run)
        loop(run, *args)

    monkeypatch.setattr(train_module, "run_loop", spy)
    return captured
