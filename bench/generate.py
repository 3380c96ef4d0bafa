"""Write an UltraChat-like raw JSONL file: N conversations, lengths like ultrachat_200k's.

    python bench/generate.py 100000 bench/out/ultrachat_100k.jsonl
    python bench/generate.py 100000 --cache-dir bench/out/inputs   # reuse if there; prints the path

Each line is `{"id": "<i>", "data": [user, assistant, ...]}` with 4, 6 or 8 messages (uniformly),
so every conversation alternates user/assistant and ends with an assistant turn (2-4 turns, 3 on
average, each one unfolded row). Message lengths follow ultrachat_200k's: the 20 sample
conversations in ../shared/samples have 136 messages, user turns 376 characters on average (median
179: skewed), answers 1,388 (median 1,100: less skewed), 882 overall. Here user lengths are drawn
from an exponential distribution and answer lengths from a gamma of shape 2 with those means.

Text: a message of n words is n consecutive words of a seeded corpus of CORPUS_WORDS random words
from a fixed vocabulary, starting at a random word. That gives the same text as drawing every word
independently, but a message is one string slice instead of hundreds of draws and joins, which is
what makes a 1M-conversation file (about 5 GB) take seconds, not minutes. The corpus (about 80 MB)
is much larger than zstd's window, so messages do not become easier to compress than independent
draws would be. Everything comes from one seeded generator in a fixed order: the same N gives the
same file bytes on every run (with the same numpy, which does not promise its streams across
versions).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# Bump when the output for a given N changes, so cached inputs (`cached_input`) are regenerated.
GENERATOR_VERSION = 2

WORDS: list[str] = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up into do "
    "model data training answer question language system learning reward feedback policy example result"
).split()
# Lines are built by hand, not with json.dumps per message (measured: ~4.6 us per message, 27 s
# for 1M conversations, more than the rest of the generator): safe because no word needs escaping.
assert all(json.dumps(word) == f'"{word}"' for word in WORDS)

MESSAGE_COUNTS = (4, 6, 8)
USER_CHARS, ASSISTANT_CHARS = 376, 1388  # mean lengths in ultrachat_200k's sample
ASSISTANT_SHAPE = 2.0  # gamma shape of answer lengths (1.0, exponential, for user turns)
CORPUS_WORDS = 1 << 24
BATCH = 10_000  # conversations per write; part of the output's definition (the draw order)
SEED = 0


def make_corpus(rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """The corpus text (words joined by single spaces) and each word's start offset, plus one
    sentinel offset past the end, so words [i, j) are `text[starts[i]:starts[j] - 1]`."""
    picks = rng.integers(0, len(WORDS), CORPUS_WORDS)
    text = " ".join(map(WORDS.__getitem__, picks.tolist()))
    widths = np.array([len(w) + 1 for w in WORDS])[picks]  # each word and the space after it
    starts = np.concatenate([[0], np.cumsum(widths)])
    return text, starts


def message_lengths(rng: np.random.Generator, n_messages: np.ndarray, chars_per_word: float) -> np.ndarray:
    """Words per message, for all messages of a batch in order (user first in each conversation)."""
    first = np.cumsum(n_messages) - n_messages
    position = np.arange(n_messages.sum()) - np.repeat(first, n_messages)
    is_user = position % 2 == 0
    shape = np.where(is_user, 1.0, ASSISTANT_SHAPE)
    mean_words = np.where(is_user, USER_CHARS, ASSISTANT_CHARS) / chars_per_word
    return np.maximum(1, rng.gamma(shape, mean_words / shape).astype(np.int64))


def batch_lines(rng: np.random.Generator, corpus: tuple[str, np.ndarray], first_id: int, n: int) -> str:
    """JSONL text of conversations first_id .. first_id + n - 1."""
    text, starts = corpus
    n_messages = rng.choice(MESSAGE_COUNTS, size=n)
    n_words = message_lengths(rng, n_messages, chars_per_word=len(text) / CORPUS_WORDS)
    n_words = np.minimum(n_words, CORPUS_WORDS)
    first_word = rng.integers(0, CORPUS_WORDS - n_words + 1)
    begins, ends = starts[first_word], starts[first_word + n_words] - 1
    messages = [text[b:e] for b, e in zip(begins.tolist(), ends.tolist())]
    lines = []
    k = 0
    for i, m in enumerate(n_messages.tolist()):
        lines.append(f'{{"id": "{first_id + i}", "data": ["' + '", "'.join(messages[k:k + m]) + '"]}\n')
        k += m
    return "".join(lines)


def generate(n: int, out: Path, seed: int = SEED) -> None:
    """Write n conversations to `out` (atomically: a partial file never has the final name)."""
    rng = np.random.default_rng(seed)
    corpus = make_corpus(rng)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w", encoding="ascii") as f:
        for first_id in range(0, n, BATCH):
            f.write(batch_lines(rng, corpus, first_id, min(BATCH, n - first_id)))
    tmp.replace(out)


def cached_input(n: int, folder: Path) -> Path:
    """The generated file for n conversations in `folder`, written only if this version's is missing."""
    path = folder / f"ultrachat-{n}-v{GENERATOR_VERSION}.jsonl"
    if not path.exists():
        generate(n, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="Number of conversations.")
    parser.add_argument("out", type=Path, nargs="?", help="Output JSONL file (always written).")
    parser.add_argument("--cache-dir", type=Path, help="Instead of OUT: reuse or write this version's file for N "
                        "in this folder and print its path (what bench_data.py uses).")
    args = parser.parse_args()
    if (args.out is None) == (args.cache_dir is None):
        parser.error("give either OUT.jsonl or --cache-dir DIR")
    if args.n < 1:
        parser.error(f"N: must be at least 1 (got {args.n})")
    if args.out is not None:
        generate(args.n, args.out)
    else:
        print(cached_input(args.n, args.cache_dir))

if __name__ == "__main__":
    main()
