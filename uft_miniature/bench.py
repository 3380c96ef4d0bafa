"""The miniature benchmark, end to end, in one working folder (`out/miniature/<size>/`):

1. `raw/`: the world's files in the public datasets' layouts (sources.write_world);
2. `prepared/`, `mixes/`: through `uftdata unfold`, `score`, `feedback --pairs-from-scores` and
   `uftdata mix RECIPE`, run as commands exactly as a user runs them;
3. `base/`: the pretrained base model (cached by content key, reused by later runs);
4. `runs/<method>/seed<S>/`: `uft-train RECIPE` for every method and seed (the same entry point as
   the command, in this process to save the imports), second stages after their first stage;
5. `eval/<method>/seed<S>.json`: the ground-truth evaluation of every run, and of the base.
Every step but `mix` (seconds; rebuilt from its recipe each time, byte-identical) skips work whose
output is complete, so an interrupted benchmark resumes; a folder made for another size is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from uft_miniature.methods import GRID, RECIPES, BenchSize, Method

Log = Callable[[str], None]
SIZE_FILE = "bench_size.json"
MIXTURE_RECIPES = ("uft.yaml", "sft_then_dpo.yaml")  # each distinct mixture once; the rest share them


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Recipes name their files relative to the working folder, as a user's do."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def command(name: str) -> str:
    """The installed console script beside this interpreter (on PATH in an activated venv)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


def prepare_data(work: Path, size: BenchSize, log: Log) -> None:
    from uft_miniature.sources import write_world
    from uft_miniature.world import build_world

    raw, prepared = work / "raw", work / "prepared"
    made_for = json.dumps(dataclasses.asdict(size), sort_keys=True, default=str)
    if (raw / SIZE_FILE).is_file() and (raw / SIZE_FILE).read_text() != made_for:
        raise RuntimeError(f"{work} was made for another benchmark size ({raw / SIZE_FILE}); "
                           "delete it or pass another --work")
    if not (raw / SIZE_FILE).is_file():
        counts = write_world(build_world(size.world), raw, conversations=size.conversations,
                             eval_size=size.eval_questions, probes=size.probes)
        (raw / SIZE_FILE).write_text(made_for)  # last: its presence means raw/ is complete
        log(f"world: {counts}")
    steps = [
        ["unfold", "raw/ultrachat.jsonl", "-o", "prepared/ultrachat.parquet", "--source", "ultrachat"],
        ["score", "raw/helpsteer2.jsonl", "-o", "prepared/helpsteer2.parquet", "--source", "helpsteer2"],
        ["score", "raw/helpsteer2_validation.jsonl", "-o", "prepared/helpsteer2_validation.parquet",
         "--source", "helpsteer2"],
        ["feedback", "--pairs-from-scores", "prepared/helpsteer2.parquet", "-o", "prepared/helpsteer2_pairs.parquet"],
        ["feedback", "--pairs-from-scores", "prepared/helpsteer2_validation.parquet",
         "-o", "prepared/helpsteer2_validation_pairs.parquet"],
    ]
    prepared.mkdir(exist_ok=True)
    for args in steps:
        if not (work / args[args.index("-o") + 1]).is_file():
            run_command(["uftdata", *args, "--quiet"], work, log)
    recipes = list(MIXTURE_RECIPES) + ([m.recipe for m in GRID if m.recipe is not None] if size.grid else [])
    for recipe in recipes:
        run_command(["uftdata", "mix", str(RECIPES / recipe), "--overwrite", "--quiet"], work, log)


def run_command(args: list[str], cwd: Path, log: Log) -> None:
    proc = subprocess.run([command(args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr}")
    log(proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else " ".join(args))


def prepare_base(work: Path, size: BenchSize, log: Log) -> Path:
    from uft_miniature.base import prepare_base as pretrain
    from uft_miniature.pretrain import SIZES
    from uft_miniature.world import build_world

    folder = pretrain(build_world(size.world), work / "base", SIZES[size.pretrain], log=log)
    return folder.resolve()


def run_dir(work: Path, method: Method, seed: int) -> Path:
    return work / "runs" / method.name / f"seed{seed}"


def train_method(work: Path, base: Path, method: Method, seed: int, size: BenchSize, log: Log) -> Path:
    """`uft-train recipes/miniature/<recipe> ...` for one seed; skipped when its adapter exists."""
    from uft_train.cli import run_training

    assert method.recipe is not None, method  # the base model is evaluated, never trained

    out = run_dir(work, method, seed)
    if (out / "summary.json").is_file():
        return out
    overrides = [f"model.name={base}", f"train.seed={seed}", f"output.dir={out}", "output.overwrite=true"]
    if method.after is not None:
        overrides.append(f"model.init_adapter={run_dir(work, _method(size, method.after), seed) / 'adapter'}")
    if size.max_steps is not None:
        overrides.append(f"train.max_steps={size.max_steps}")
    started = time.perf_counter()
    with working_dir(work), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        run_training(RECIPES / method.recipe, overrides)
    log(f"trained {method.name} seed {seed} in {time.perf_counter() - started:.0f} s")
    return out


def _method(size: BenchSize, name: str) -> Method:
    return next(m for m in size.all_methods() if m.name == name)


def evaluate_run(work: Path, base: Path, method: Method, seed: int, size: BenchSize, log: Log) -> dict:
    """The ground-truth metrics of one run (or of the base), cached in eval/<method>/seed<S>.json."""
    out = work / "eval" / method.name / f"seed{seed}.json"
    if out.is_file():
        return json.loads(out.read_text())
    from uft_miniature.evaluate import evaluate, load_eval_set
    from uft_miniature.model import load_base, load_run

    started = time.perf_counter()
    tokenizer, base_model = load_base(base)
    model = base_model if method.recipe is None else load_run(run_dir(work, method, seed), base)
    metrics = evaluate(model, tokenizer, base_model, load_eval_set(work / "raw"), batch_size=size.eval_batch_size)
    metrics = {k: round(float(v), 6) for k, v in sorted(metrics.items())}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log(f"evaluated {method.name} seed {seed} in {time.perf_counter() - started:.0f} s: "
        f"accuracy {metrics['accuracy']:.3f}, reward {metrics['reward']:.3f}, kl {metrics.get('kl', 0):.4f}")
    return metrics


def run_benchmark(work: Path, size: BenchSize, log: Log = print) -> dict[str, dict[int, dict]]:
    """Everything for `size` in `work`; returns {method: {seed: metrics}}."""
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    started = time.perf_counter()
    prepare_data(work, size, log)
    base = prepare_base(work, size, log)
    results: dict[str, dict[int, dict]] = {}
    for method in size.all_methods():
        seeds = size.seeds[:1] if method.recipe is None else size.seeds  # the base does not vary by seed
        for seed in seeds:
            if method.recipe is not None:
                train_method(work, base, method, seed, size, log)
            results.setdefault(method.name, {})[seed] = evaluate_run(work, base, method, seed, size, log)
    log(f"benchmark: {time.perf_counter() - started:.0f} s")
    return results
