"""The run folder: run.json (its marker), resolved recipe, data report, metrics.jsonl, checkpoints, the
final adapter."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

import polars as pl
import torch
import torch.distributed as dist
from peft import PeftModel
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedTokenizerBase

from uft_train.checkpoint import latest_checkpoint
from uft_train.errors import TrainError
from uft_train.fsdp import trainable_state
from uft_train.predictions import PREDICTIONS, write_predictions
from uftdata import __version__
from uftdata.atomic import atomic_path, check_output

if TYPE_CHECKING:  # tensorboard is optional: imported when a run asks for it
    from torch.utils.tensorboard import SummaryWriter


class Trained(Protocol):
    """What `RunFolder.finish` reads of a run (`uft_train.train.Run`): the model trained."""

    @property
    def model(self) -> torch.nn.Module: ...


def setup_distributed() -> tuple[int, int]:
    """(rank, world size): from torchrun's environment, else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            # One GPU per process: `cuda` (train.device auto) then means this rank's GPU, not GPU 0.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


MARKER = "run.json"  # every run folder is made holding it: only a folder holding it is reused or removed


def is_run_folder(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


class RunFolder:
    """`output.dir`. Built on every rank, it only looks (rank 0): a new run folder, or output.overwrite
    on one of ours, is `fresh` and made by `prepare` once the run's checks have passed, so a run
    refused for its data, model or device writes nothing; a run folder of ours is continued; a
    finished run needs output.overwrite; any other non-empty folder is refused, never touched."""

    def __init__(self, path: Path, *, overwrite: bool, rank: int, tensorboard: bool = False,
                 inputs: Iterable[Path] = ()) -> None:
        self.path, self.rank, self.tensorboard = path, rank, tensorboard
        self.inputs = list(inputs)
        self._board: SummaryWriter | None = None
        if tensorboard and rank == 0:
            tensorboard_writer(None)  # fail before any work when the package is missing
        self.fresh = rank == 0 and self._fresh(overwrite)  # other ranks: rank 0 has made it (a barrier)
        self._metrics: TextIO | None = None

    def _fresh(self, overwrite: bool) -> bool:
        """True: a new run folder will be made; False: ours, continued. Raises for the others."""
        path = self.path
        if os.path.lexists(path) and not path.is_dir():
            raise TrainError(str(path), "is not a folder", fix="Choose another output.dir.")
        if not path.is_dir() or not any(path.iterdir()):
            return True
        if not is_run_folder(path):
            raise TrainError(str(path), f"is not empty and holds no {MARKER}: it is not a uft run folder, and "
                               "uft-train neither writes into nor removes it",
                               fix="Choose another output.dir (a run folder of an older uft-train: remove it "
                                   "yourself).")
        if overwrite:
            check_output(path, overwrite=True, owned=is_run_folder, inputs=self.inputs)
            return True
        if (path / "adapter").exists():
            raise TrainError(str(path), "holds a finished run",
                               fix="Set output.overwrite=true or choose another output.dir.")
        return False

    def checkpoint(self) -> Path | None:
        """The checkpoint to resume from: none in a fresh run."""
        return None if self.fresh else latest_checkpoint(self.path)

    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    def tokenizer_source(self) -> Path | None:
        """Where the tiny model's tokenizer is read: this run folder's, unless the run starts afresh."""
        return None if self.fresh else self.tokenizer_dir()

    def prepare(self, tokenizer: PreTrainedTokenizerBase | None) -> None:
        """Rank 0: a fresh run folder with its marker (and `tokenizer`, the tiny model's) replaces what was
        at output.dir (our own run folder, with overwrite) in one rename; a continued one is kept."""
        if self.rank != 0 or not self.fresh:
            return
        with atomic_path(self.path, overwrite=True, owned=is_run_folder, inputs=self.inputs) as tmp:
            tmp.mkdir()
            (tmp / MARKER).write_text(json.dumps({"format": "uft-train run folder", "format_version": 1,
                                                  "uft_version": __version__}, indent=2) + "\n", encoding="utf-8")
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp / "tokenizer")
        self.fresh = False

    def start(self, recipe: str, data_report: dict, steps_per_epoch: int, total_steps: int,
              *, resumed_at: int = 0) -> None:
        if self.rank != 0:
            return
        _write(self.path / "recipe.yaml", recipe)
        _write(self.path / "data.json", json.dumps({**data_report, "steps_per_epoch": steps_per_epoch,
                                                    "total_steps": total_steps}, indent=2, sort_keys=True) + "\n")
        # A killed run may have logged steps after its last checkpoint (and a torn last line): those
        # steps run again, so their old lines go, and every step is logged once.
        metrics = self.path / "metrics.jsonl"
        lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.is_file() else []
        _write(metrics, "".join(line + "\n" for line in lines if _logged_step(line) <= resumed_at))
        self._metrics = open(metrics, "a", encoding="utf-8")
        if self.tensorboard:
            self._board = tensorboard_writer(self.path / "tensorboard")

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
        if self._board is not None:
            for key, value in metrics.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, metrics["step"])

    def finish(self, run: Trained, final_eval: dict, predictions: pl.DataFrame | None = None) -> None:
        """The final adapter, eval_predictions.parquet (when there are rewards) and summary.json.
        Every rank calls it (under FSDP the adapter is gathered whole first); rank 0 writes."""
        model = run.model.module if isinstance(run.model, DistributedDataParallel) else run.model
        adapter = trainable_state(model)
        if self.rank != 0:
            return
        if predictions is not None:
            write_predictions(predictions, self.path / PREDICTIONS)
        assert isinstance(model, PeftModel)  # uft_train.model.add_adapter made it
        with atomic_path(self.path / "adapter") as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True, state_dict=adapter)
        _write(self.path / "summary.json", json.dumps({"final_eval": final_eval}, indent=2, sort_keys=True) + "\n")
        if self._metrics is not None:
            self._metrics.close()
        if self._board is not None:
            self._board.close()


def _logged_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _write(path: Path, text: str) -> None:
    """One of the run's own files, in its own run folder: rewritten when the run is continued."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def tensorboard_writer(folder: Path | None) -> SummaryWriter | None:
    """A SummaryWriter on `folder` (None: only check that TensorBoard is installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainError("output.tensorboard", "needs the tensorboard package",
                           fix="pip install tensorboard (or set output.tensorboard=false).") from None
    return None if folder is None else SummaryWriter(str(folder))
