"""Shared fixtures."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# The installed console script: on PATH in an activated venv, else beside this interpreter.
UFTDATA = shutil.which("uftdata") or str(Path(sys.executable).with_name("uftdata"))

# Real records of the public datasets (see its SOURCES.md); read in place, never copied into the repo.
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"real-data samples not found at {SAMPLES_DIR}")
    return SAMPLES_DIR
