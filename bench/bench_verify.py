"""Time the verification of a mixture folder (uftdata.verify.check_mixture) on a mixture of about 1 GB.

    python bench/bench_verify.py [WORK] [--conversations N] [--repeat K]

WORK (default bench/out/verify, git-ignored) keeps what is built: the generated UltraChat-like input
(bench/generate.py), its unfolding and the mixture `WORK/mix` (`uftdata mix --take unfold=all --test
unfold=0.01`), each made only when missing, so a second run times the same folder again. N
conversations (default 330,000) give about 1 GB of shards.

Then, K times, a child process verifies the mixture: read_manifest, the sha256 of every shard
(`files`), reading the shards' small columns (`read`: id, kind, score, label, pair_id, source), and
the checks on those rows (`rows`: counts, content hash, seed order); `total` is the whole
check_mixture call as `uft-train`, `export` and `publish` make it. Each phase is timed with
time.perf_counter() inside the child; its peak RSS is ru_maxrss from os.wait4 (Linux: KiB), so the
parent's memory does not count (see bench_data.py). The page cache is warmed first (the shards are
read once, untimed): the figures are for files in memory, the usual case right after `mix` or a
download; from a cold disk, add the time to read the shard bytes once.

Figures (median of K) go to stdout as a table; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_data import MIB, disk_bytes, generated_input, uftdata_command, warm_page_cache
from report import machine

BENCH = Path(__file__).resolve().parent
CONVERSATIONS = 330_000

# Runs in the child: each phase of uftdata.verify in order, then check_mixture as a whole.
CHILD = r"""
import json, sys, time
from pathlib import Path
from uftdata import verify
from uftdata.manifest import read_manifest
folder = Path(sys.argv[1])
times = {}
start = time.perf_counter()
manifest = read_manifest(folder)
times["manifest"] = time.perf_counter() - start
start = time.perf_counter()
assert verify._file_problems(folder, manifest) == []
times["files"] = time.perf_counter() - start
start = time.perf_counter()
splits, problems = verify._read_splits(folder, manifest)
assert problems == []
times["read"] = time.perf_counter() - start
start = time.perf_counter()
assert verify._count_problems(manifest, splits) == []
assert verify.content_hash(splits) == manifest.content_hash
assert verify._order_problems(manifest, splits) == []
times["rows"] = time.perf_counter() - start
del splits
start = time.perf_counter()
verify.check_mixture(folder)
times["total"] = time.perf_counter() - start
times["rows_in_mixture"] = sum(f.rows for f in manifest.files)
print(json.dumps(times))
"""


def build(work: Path, conversations: int, uftdata: str) -> Path:
    """The mixture folder WORK/mix, built unless a finished one (with its manifest) is there."""
    mix = work / "mix"
    if (mix / "manifest.json").is_file():
        print(f"bench: reusing {mix}", file=sys.stderr)
        return mix
    work.mkdir(parents=True, exist_ok=True)
    source = generated_input(conversations, work)
    unfolded = work / f"unfold-{conversations}.parquet"
    if not unfolded.is_file():
        print(f"bench: unfolding {source}", file=sys.stderr)
        subprocess.run([uftdata, "unfold", str(source), "-o", str(unfolded), "-q"], check=True)
    print(f"bench: mixing {unfolded} into {mix}", file=sys.stderr)
    subprocess.run([uftdata, "mix", "--take", f"{unfolded}=all", "--test", f"{unfolded}=0.01", "-o", str(mix), "-q"],
                   check=True)
    return mix


def verify_once(mix: Path) -> tuple[dict, float]:
    """(phase seconds, peak RSS in MiB) of one child process verifying `mix`."""
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(mix)], stdout=subprocess.PIPE, text=True)
    out = process.stdout.read() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"bench: verifying {mix} failed with status {process.returncode}")
    return json.loads(out), usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, nargs="?", default=BENCH / "out" / "verify",
                        help="Folder for the input, its unfolding and the mixture (default bench/out/verify).")
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS,
                        help=f"Conversations generated when the mixture is built (default {CONVERSATIONS:,}).")
    parser.add_argument("--repeat", type=int, default=3, help="Verifications timed; figures are medians (default 3).")
    args = parser.parse_args()
    if args.repeat < 1 or args.conversations < 1:
        parser.error("--repeat and --conversations must be at least 1")
    mix = build(args.work, args.conversations, uftdata_command())
    shards = sorted((mix / "data").glob("*.parquet"))
    size = sum(disk_bytes(s) for s in shards)
    for shard in shards:
        warm_page_cache(shard)
    runs = []
    for k in range(args.repeat):
        started = time.perf_counter()
        runs.append(verify_once(mix))
        print(f"  run {k + 1}/{args.repeat}: {runs[-1][0]['total']:.2f} s in check_mixture, "
              f"{time.perf_counter() - started:.1f} s with interpreter start", file=sys.stderr)
    median = {key: statistics.median(r[key] for r, _ in runs) for key in ("manifest", "files", "read", "rows", "total")}
    rss = statistics.median(p for _, p in runs)
    info = machine()
    print(f"Mixture {mix}: {size / MIB:,.0f} MiB in {len(shards)} shards, {runs[0][0]['rows_in_mixture']:,} rows; "
          f"{info['cpu_model']}, {info['nproc']} CPUs, load {info['load_avg_1m_at_start']:.1f}; median of "
          f"{args.repeat}; warm page cache.\n")
    print("| phase | seconds | MB/s of shards |")
    print("|---|---:|---:|")
    names = {"manifest": "read manifest.json", "files": "sha256 of every shard", "read": "read the small columns",
             "rows": "counts, content hash, seed order", "total": "check_mixture (all of the above)"}
    for key, name in names.items():
        print(f"| {name} | {median[key]:.2f} | {size / 1e6 / median[key]:,.0f} |")
    print(f"\nPeak RSS of the verifying process: {rss:,.0f} MiB (interpreter and imports included).")
    print(f"Command: python bench/bench_verify.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
