"""The run folder: resolved recipe, data report, metrics.jsonl, checkpoints, the final adapter."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from uftdata.atomic import atomic_path
from uftdata.errors import UftDataError


def setup_distributed() -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class RunFolder:
    def __init__(self, path: Path, *, overwrite: bool, rank: int) -> None:
        self.path, self.rank = path, rank
        finished = (path / "adapter").exists()
        if rank == 0 and finished and not overwrite:
            raise UftDataError(str(path), "holds a finished run", fix="Set output.overwrite=true or choose another output.dir.")
        if rank == 0 and finished:  # a fresh run: no old metrics appended to, no old checkpoint resumed
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        self._metrics = None

    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    def start(self, recipe: str, data_report: dict, steps_per_epoch: int, total_steps: int) -> None:
        if self.rank != 0:
            return
        _write(self.path / "recipe.yaml", recipe)
        _write(self.path / "data.json", json.dumps({**data_report, "steps_per_epoch": steps_per_epoch,
                                                    "total_steps": total_steps}, indent=2, sort_keys=True) + "\n")
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")

    def progress(self, steps: Iterable[int], total: int, start: int) -> Iterator[int]:
        if self.rank != 0 or not sys.stderr.isatty():
            yield from steps
            return
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("training", total=total, completed=start)
            for step in steps:
                yield step
                bar.advance(task)

    def log(self, metrics: dict) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps(metrics, sort_keys=True) + "\n")
            self._metrics.flush()

    def finish(self, run, final_eval: dict) -> None:  # noqa: ANN001
        if self.rank != 0:
            return
        model = run.model.module if hasattr(run.model, "module") else run.model
        with atomic_path(self.path / "adapter") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
        _write(self.path / "summary.json", json.dumps({"final_eval": final_eval}, indent=2, sort_keys=True) + "\n")
        if self._metrics is not None:
            self._metrics.close()


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
