"""Time `uftdata unfold` and `uftdata mix` against a `datasets.map` unfold and pyarrow's I/O floor.

    python bench/bench_data.py --sizes 100000,1000000 [--repeat 3] [--json bench/out/results.json]

For each size N: generate (or reuse) an UltraChat-like input of N conversations (bench/generate.py),
warm the page cache with it, then run, one at a time, as whole processes (interpreter start and
imports included):
  unfold            uftdata unfold IN -o unfold.parquet -q
  datasets_map      python bench/datasets_unfold.py IN datasets.parquet            (no ids, no groups)
  datasets_map_ids  python bench/datasets_unfold.py IN datasets_ids.parquet --ids  (id, group per row in Python)
  io_floor          python bench/io_floor.py unfold.parquet floor.parquet
  mix               uftdata mix --take unfold.parquet=T --test unfold.parquet=0.01 -o mix -q
T is min(260k, 95% of the unfolded rows): 260k is the paper's largest UltraChat size, and the 1%
test split leaves a little under all rows for the take. Each process's wall time is
time.perf_counter() around it; its peak RSS is ru_maxrss from os.wait4 on its pid (Linux: KiB).
With --repeat K every figure is the median of K runs. Then bench/check_outputs.py checks that the
unfoldings agree (rows, source_ids, ids, groups); any difference stops the benchmark.

This script imports only the standard library and does all heavy work (generating, checking) in
child processes: Linux starts a child's ru_maxrss at its parent's peak RSS (the memory the child
had before exec), so a big parent would raise every figure. A bare Python parent adds ~12 MiB.

Markdown tables go to stdout, progress to stderr, raw figures to --json. The work folder (default
bench/out/, git-ignored) keeps generated inputs between runs; outputs are overwritten, and the
datasets cache is emptied before and after each datasets run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from report import machine, markdown_report

BENCH = Path(__file__).resolve().parent
MIX_TAKE_MAX = 260_000
MIX_TEST = 0.01
MIB = 1 << 20


def run_process(argv: list[str], log: Path, env: dict[str, str]) -> tuple[float, float]:
    """Run argv to completion: (wall seconds, peak RSS in MiB). A failure stops the benchmark."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4; tell Popen
    if process.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} exited with status {process.returncode}; "
                 f"its output is in {log}:\n{log.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def warm_page_cache(path: Path) -> None:
    """Read the file once, untimed, so the first timed process does not alone pay for the disk."""
    with open(path, "rb") as f:
        while f.read(16 * MIB):
            pass


def generated_input(n: int, work: Path) -> Path:
    """The cached input for n conversations (generated in a child process, see the docstring)."""
    done = subprocess.run([sys.executable, str(BENCH / "generate.py"), str(n), "--cache-dir", str(work / "inputs")],
                          check=True, capture_output=True, text=True)
    return Path(done.stdout.strip().splitlines()[-1])


def unfolded_rows(log: Path) -> int:
    """Rows written, from uftdata's summary line (`unfold: ... -> 5995 rows in OUT`)."""
    found = re.search(r"-> (\d+) rows in ", log.read_text())
    if found is None:
        sys.exit(f"bench: no `-> N rows in` summary line in {log}; has uftdata's summary changed?")
    return int(found.group(1))


def step_commands(source: Path, folder: Path, uftdata: str) -> dict[str, tuple[list[str], Path]]:
    """Each step's command line (mix's take filled in after unfold) and the output it writes."""
    unfolded, cache = folder / "unfold.parquet", ["--cache-dir", str(folder / "hf-cache")]
    python = [sys.executable]  # the interpreter running this file (the venv's)
    datasets_script = [*python, str(BENCH / "datasets_unfold.py"), str(source)]
    return {
        "unfold": ([uftdata, "unfold", str(source), "-o", str(unfolded), "-q"], unfolded),
        "datasets_map": ([*datasets_script, str(folder / "datasets.parquet"), *cache], folder / "datasets.parquet"),
        "datasets_map_ids": ([*datasets_script, str(folder / "datasets_ids.parquet"), "--ids", *cache],
                             folder / "datasets_ids.parquet"),
        "io_floor": ([*python, str(BENCH / "io_floor.py"), str(unfolded), str(folder / "floor.parquet")],
                     folder / "floor.parquet"),
        "mix": ([uftdata, "mix", "--take", "TAKE", "--test", f"{unfolded}={MIX_TEST}", "-o", str(folder / "mix"),
                 "-q"], folder / "mix"),
    }


def bench_size(n: int, work: Path, repeat: int, env: dict[str, str], uftdata: str) -> dict:
    """Run every step `repeat` times on n conversations; the size's raw figures, JSON-ready."""
    started = time.perf_counter()
    source = generated_input(n, work)
    print(f"[{n:,} conversations] input {source} ({disk_bytes(source) / MIB:,.0f} MiB), "
          f"ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    warm_page_cache(source)
    folder = work / f"n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    steps = step_commands(source, folder, uftdata)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    cache, cache_bytes, rows = folder / "hf-cache", 0, 0
    for k in range(repeat):  # steps interleaved, so a slow spell of the machine hits all of them alike
        for name, (argv, output) in steps.items():
            remove(output)
            remove(cache)
            if name == "mix":
                argv[argv.index("--take") + 1] = f"{steps['unfold'][1]}={min(MIX_TAKE_MAX, int(rows * 0.95))}"
            runs[name].append(run_process(argv, folder / f"{name}.log", env))
            print(f"  run {k + 1}/{repeat} {name}: {runs[name][-1][0]:.1f} s, {runs[name][-1][1]:,.0f} MiB",
                  file=sys.stderr)
            if name == "unfold":
                rows = unfolded_rows(folder / "unfold.log")
            if name.startswith("datasets_map"):
                cache_bytes = max(cache_bytes, disk_bytes(cache))
                remove(cache)
    check = subprocess.run([sys.executable, str(BENCH / "check_outputs.py"),
                            *(str(steps[name][1]) for name in ("unfold", "datasets_map", "datasets_map_ids"))],
                           capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"bench: the outputs for {n:,} conversations fail their checks:\n{check.stderr}{check.stdout}")
    return {
        "conversations": n,
        "input": str(source),
        "input_bytes": disk_bytes(source),
        "rows": rows,
        "datasets_cache_bytes": cache_bytes,
        "steps": {name: {"argv": argv, "wall_s": [w for w, _ in runs[name]], "peak_rss_mib": [p for _, p in runs[name]],
                         "output_bytes": disk_bytes(output)} for name, (argv, output) in steps.items()},
    }


def uftdata_command() -> str:
    beside = Path(sys.executable).parent / "uftdata"  # the venv's, when run with its python
    found = str(beside) if beside.exists() else shutil.which("uftdata")
    if found is None:
        sys.exit("bench: uftdata is not on PATH; activate the venv or run `pip install -e .` first")
    return found


def parse_sizes(text: str) -> list[int]:
    sizes = []
    for item in text.lower().replace("_", "").split(","):
        scale = {"k": 1_000, "m": 1_000_000}.get(item[-1:], 1)
        digits = item[:-1] if scale > 1 else item
        if not digits.isdigit() or int(digits) == 0:
            raise argparse.ArgumentTypeError(f"{item!r} is not a positive count; expected e.g. 100000,1000000 or 100k,1m")
        sizes.append(int(digits) * scale)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[100_000, 1_000_000],
                        help="Conversation counts, comma-separated (default 100000,1000000; 100k,1m also work).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per step; figures are medians (default 1).")
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw figures to this JSON file.")
    parser.add_argument("--work", type=Path, default=BENCH / "out", help="Inputs and outputs (default bench/out/).")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat: must be at least 1 (got {args.repeat})")

    info = machine()
    if info["load_avg_1m_at_start"] > 0.25 * info["nproc"]:
        print(f"bench: warning: load average {info['load_avg_1m_at_start']:.1f} on {info['nproc']} CPUs; "
              "other work on this machine will skew the figures", file=sys.stderr)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    uftdata = uftdata_command()
    results = [bench_size(n, args.work, args.repeat, env, uftdata) for n in args.sizes]
    command = ["python", "bench/bench_data.py", *sys.argv[1:]]
    disk = {"inputs_bytes": disk_bytes(args.work / "inputs"),
            **{f"outputs_{r['conversations']}_bytes": disk_bytes(args.work / f"n{r['conversations']}") for r in results}}
    text, summary = markdown_report(results, info, command, args.repeat, disk)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "repeat": args.repeat, "machine": info, "disk": disk,
                                         "sizes": results, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
