"""`uft-miniature [--size SIZE] [--work DIR] [--docs DIR]`: the paper's comparison in miniature.

Generates the synthetic world, prepares its data with `uftdata`, pretrains (or reuses) the base
model, selects every method's setting over its grid on held-out selection questions (protocol.py),
trains every method at its pick over the size's seeds with `uft-train`, evaluates each against the
world's ground truth, and writes results.md / results.json / selection.png / ratio_sweep.png /
reward_vs_kl.png into --docs. Rerunning skips finished steps (delete --work to start over).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from uft_miniature.sizes import SIZES, default_size


def header(size_name: str, argv: list[str]) -> str:
    import peft
    import torch
    import transformers

    import uft_train

    return "\n".join([
        f"# Miniature benchmark: size `{size_name}`", "",
        f"Command: `uft-miniature {' '.join(argv)}` "
        f"({'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}).",
        f"Versions: uft {getattr(uft_train, '__version__', '0.1.0')}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}, python {platform.python_version()}.",
        "Final table: mean ± sample sd over the seeds (the base model is one model: no spread).",
    ])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="uft-miniature", description=__doc__.split("\n\n")[0],
                                     epilog="Sizes: " + "; ".join(f"{k}: {v.summary}" for k, v in SIZES.items()))
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="default: `large` on a CUDA machine, else `default`")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default out/miniature/SIZE)")
    parser.add_argument("--docs", type=Path, default=None, help="where the table and plots go (default: --work)")
    args = parser.parse_args(argv)
    name = args.size or default_size()
    size = SIZES[name].bench
    work = args.work or Path("out/miniature") / name
    started = time.perf_counter()
    from uft_miniature.bench import run_benchmark
    from uft_miniature.results import markdown_table, write_results
    from uftdata.errors import UftError

    try:
        results = run_benchmark(work, size)
        table = write_results(results, args.docs or work, header(name, argv), list(size.protocol.ratios))
    except UftError as error:  # a refused output path, a bad input: one line, no traceback
        print(f"uft-miniature: error: {error.line()}", file=sys.stderr)
        raise SystemExit(2) from None
    print(markdown_table(table, results["settings"]))
    print(f"written: {(args.docs or work) / 'results.md'} ({(time.perf_counter() - started) / 60:.1f} min, "
          f"{torch_threads()} torch threads)")


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
