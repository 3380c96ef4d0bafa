"""Shared fixtures."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

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
