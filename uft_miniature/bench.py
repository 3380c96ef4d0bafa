"""The miniature benchmark, end to end, in one working folder (`out/miniature/<size>/`):

1. `raw/`: the world's files in the public datasets' layouts (sources.write_world);
2. `prepared/`, `mixes/`: through `uftdata unfold`, `score`, `feedback --pairs-from-scores` and
   `uftdata mix RECIPE`, run as commands exactly as a user runs them;
3. `base/`: the pretrained base model (cached by content key, reused by later runs);
4. selection (protocol.py): every stage's grid with the first seed, `uft-train RECIPE` per point in
   `runs/<method>/<setting>/seed<S>/`, scored on the selection questions (`eval/select/...`);
5. comparison: every method at its pick over every seed, the ratio sweep and the equal-steps
   controls at UFT's pick, scored on the test questions (`eval/test/...`).
Reference log-probs are precomputed into one cache, `cache/`, shared by every run with the same
reference (every grid point and seed of a UFT-family run on the same base).
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

from uft_miniature.methods import RECIPES, BenchSize, Job, control_names, ratio_name
from uft_miniature.protocol import Point, Stage, at_edge, extension, grid, pick

Log = Callable[[str], None]
SIZE_FILE = "bench_size.json"
MIXTURE_RECIPES = ("uft.yaml", "sft_then_dpo.yaml", "orpo.yaml")  # each distinct mixture once; the rest share them


@contextlib.contextmanager
def working_dir(path: Path, cache: Path) -> Iterator[None]:
    """Recipes name their files relative to the working folder, as a user's do; the reference cache
    lives in the working folder, so an empty folder means a run from scratch."""
    previous, previous_cache = Path.cwd(), os.environ.get("UFT_CACHE")
    os.chdir(path)
    os.environ["UFT_CACHE"] = str(cache)
    try:
        yield
    finally:
        os.chdir(previous)
        if previous_cache is None:
            os.environ.pop("UFT_CACHE", None)
        else:
            os.environ["UFT_CACHE"] = previous_cache


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
    for recipe in [*MIXTURE_RECIPES, *(f"{ratio_name(r)}.yaml" for r in size.protocol.ratios)]:
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


def train(work: Path, base: Path, job: Job, size: BenchSize, log: Log) -> Path:
    """`uft-train recipes/miniature/<recipe> ...` for one job (its first stage first); skipped when done."""
    from uft_train.cli import run_training

    out = work / "runs" / job.folder
    if (out / "summary.json").is_file():
        return out
    overrides = [f"model.name={base}", f"train.seed={job.seed}", f"output.dir={out}", "output.overwrite=true",
                 *job.point.overrides()]
    if job.after is not None:
        overrides.append(f"model.init_adapter={train(work, base, job.after, size, log) / 'adapter'}")
    steps = job.max_steps if job.max_steps is not None else size.max_steps
    if steps is not None:
        overrides.append(f"train.max_steps={steps}")
    started = time.perf_counter()
    with working_dir(work, work / "cache"), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        run_training(RECIPES / job.recipe, overrides)
    log(f"trained {job.folder} in {time.perf_counter() - started:.0f} s")
    return out


def total_steps(work: Path, job: Job) -> int:
    return int(json.loads((work / "runs" / job.folder / "data.json").read_text())["total_steps"])


def evaluate(work: Path, base: Path, job: Job | None, size: BenchSize, split: str, log: Log) -> dict:
    """Ground-truth metrics of one run (None: the base) on `split`: `select` (the selection questions:
    answers only) or `test` (every metric); cached in eval/<split>/<run>.json."""
    out = work / "eval" / split / f"{job.folder if job else 'base/seed0'}.json"
    if out.is_file():
        return json.loads(out.read_text())
    from uft_miniature.evaluate import answer_quality, load_eval_set, load_questions
    from uft_miniature.evaluate import evaluate as measure
    from uft_miniature.model import load_base, load_run

    started = time.perf_counter()
    tokenizer, base_model = load_base(base)
    model = base_model if job is None else load_run(work / "runs" / job.folder, base)
    if split == "select":
        metrics = answer_quality(model, tokenizer, load_questions(work / "raw", "selection"),
                                 batch_size=size.eval_batch_size)
    else:
        metrics = measure(model, tokenizer, base_model, load_eval_set(work / "raw"), batch_size=size.eval_batch_size)
    metrics = {k: round(float(v), 6) for k, v in sorted(metrics.items())}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    log(f"evaluated {job.folder if job else 'base'} ({split}) in {time.perf_counter() - started:.0f} s: "
        f"accuracy {metrics['accuracy']:.3f}, reward {metrics['reward']:.3f}")
    return metrics


def stage_job(size: BenchSize, stage: Stage, point: Point, seed: int, picks: dict[str, Point]) -> Job:
    after = None
    if stage.after is not None:
        first = next(s for s in size.protocol.stages if s.name == stage.after)
        after = Job(first.name, first.recipe, picks[first.name], seed)
    return Job(stage.name, stage.recipe, point, seed, after)


def select(work: Path, base: Path, size: BenchSize, log: Log) -> tuple[dict[str, Point], dict]:
    """Every stage's grid on the first seed, in order (a grid may centre on an earlier pick), grown
    past an edge pick as protocol.extension says."""
    picks: dict[str, Point] = {}
    selection = {}
    for stage in size.protocol.stages:
        points = list(grid(stage, picks))
        scores: dict[Point, dict] = {}
        fixed = len(points)
        for grown in range(size.protocol.extend + 1):
            for point in points[len(scores):]:
                job = stage_job(size, stage, point, size.seeds[0], picks)
                train(work, base, job, size, log)
                scores[point] = evaluate(work, base, job, size, "select", log)
            picks[stage.name] = pick(points, scores)
            beyond = extension(points, picks[stage.name])
            if beyond is None or grown == size.protocol.extend:
                break
            points.append(beyond)
        selection[stage.name] = {
            "source": stage.source, "pick": picks[stage.name].tag, "at_edge": at_edge(points, picks[stage.name]),
            "grown": len(points) - fixed,
            "points": [{"tag": p.tag, "lr": p.lr, "beta": p.beta, **scores[p]} for p in points]}
        log(f"selected {stage.name}: {picks[stage.name].tag}")
    return picks, selection


def compare(work: Path, base: Path, size: BenchSize, picks: dict[str, Point], log: Log) -> dict[str, dict[int, Job]]:
    """Every method at its pick over the seeds, the ratio sweep and the equal-steps controls, trained."""
    jobs: dict[str, dict[int, Job]] = {}
    for seed in size.seeds:
        for stage in size.protocol.stages:
            jobs.setdefault(stage.name, {})[seed] = stage_job(size, stage, picks[stage.name], seed, picks)
        for ratio in size.protocol.ratios:
            jobs.setdefault(ratio_name(ratio), {})[seed] = Job(ratio_name(ratio), f"{ratio_name(ratio)}.yaml",
                                                               picks["uft"], seed)
    for by_seed in jobs.values():
        for job in by_seed.values():
            train(work, base, job, size, log)
    if size.protocol.controls and size.protocol.ratios:
        largest = max(size.protocol.ratios)
        short, long = control_names(largest)
        for seed in size.seeds:
            one, many = jobs["uft"][seed], jobs[ratio_name(largest)][seed]
            for job in (dataclasses.replace(many, name=short, max_steps=total_steps(work, one)),
                        dataclasses.replace(one, name=long, max_steps=total_steps(work, many))):
                jobs.setdefault(job.name, {})[seed] = job
                train(work, base, job, size, log)
    return jobs


def cache_summary(work: Path) -> str:
    """The reference cache's hits and misses summed over every run of the folder (their data.json)."""
    counts = [json.loads(p.read_text()).get("reference_cache") for p in sorted((work / "runs").glob("*/*/*/data.json"))]
    cached = [c for c in counts if c]
    return (f"reference cache: {sum(c['hits'] for c in cached)} hits, {sum(c['misses'] for c in cached)} misses "
            f"over {len(cached)} runs with a precomputed reference ({len(counts)} runs in all)")


def run_benchmark(work: Path, size: BenchSize, log: Log = print) -> dict:
    """Everything for `size` in `work`: {"selection", "settings", "runs": {method: {seed: metrics}}}."""
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()
    started = time.perf_counter()
    prepare_data(work, size, log)
    base = prepare_base(work, size, log)
    picks, selection = select(work, base, size, log)
    jobs = compare(work, base, size, picks, log)
    runs = {"base": {size.seeds[0]: evaluate(work, base, None, size, "test", log)}}
    for name, by_seed in jobs.items():
        runs[name] = {seed: evaluate(work, base, job, size, "test", log) for seed, job in by_seed.items()}
    settings = {name: {"lr": job.point.lr, "beta": job.point.beta, "steps": total_steps(work, job)}
                for name, by_seed in jobs.items() for job in by_seed.values() if job.seed == size.seeds[0]}
    log(cache_summary(work))
    log(f"benchmark: {time.perf_counter() - started:.0f} s")
    return {"selection": selection, "settings": settings, "runs": runs}
