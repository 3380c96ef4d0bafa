"""Write an UltraChat-like raw JSONL file: N conversations of 4-8 messages, lengths like ultrachat_200k's.

ultrachat_200k's messages average ~880 characters (the 20 sample conversations in
../shared/samples: 136 messages, 882 characters on average; user turns shorter than answers).
Text is drawn from a fixed vocabulary with a seeded generator, so the file is the same every run.

    python bench/generate.py 100000 bench/out/ultrachat_100k.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

WORDS = np.array(
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up into do "
    "model data training answer question language system learning reward feedback policy example result".split()
)
USER_CHARS, ASSISTANT_CHARS = 300, 1300  # mean lengths; the mix of the two averages ~850


def conversations(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_messages = rng.choice([4, 6, 8], size=n)
    for i in range(n):
        data = []
        for m in range(n_messages[i]):
            mean = USER_CHARS if m % 2 == 0 else ASSISTANT_CHARS
            n_words = max(1, int(rng.exponential(mean / 5.2)))
            data.append(" ".join(WORDS[rng.integers(0, len(WORDS), n_words)]))
        yield {"id": str(i), "data": data}


def main(n: int, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    with open(tmp, "w") as f:
        for record in conversations(n):
            f.write(json.dumps(record) + "\n")
    tmp.replace(out)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
