"""gpu_check.py's rows: synthetic text in the row schema whose every sequence is exactly `seq_len`
tokens, its prompt `prompt_len`, with the tokenizer and template uft-train uses (so no padding, no
truncation, and every KTO KL row, a prompt with another row's completion, has the same length).

Words are drawn from the tokenizer's own one-piece words (Mistral's "▁word" pieces): SentencePiece
pieces never span a space, so a space-separated text of n of them is n tokens. The template's own
tokens are measured on one probe row, and every row is checked through uft-train's tokenization:
a tokenizer for which the arithmetic fails stops the check with the lengths it got. Imported by
gpu_check.py's children only (polars, transformers).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import polars as pl

SEED = 0


def one_token_words(tokenizer) -> list[str]:  # noqa: ANN001 - a transformers tokenizer
    """Lower-case words of 3 to 12 letters that the tokenizer encodes as one piece, sorted."""
    pieces = sorted(p[1:] for p in tokenizer.get_vocab() if re.fullmatch("\u2581[a-z]{3,12}", p))
    return [w for w in pieces if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]


def row_frame(prompts: list[str], completions: list[str], **columns: pl.Series) -> pl.DataFrame:
    """Rows of one user message and one assistant message each, ids computed, source `gpu_check`."""
    from uftdata import ids, schema

    frame = pl.DataFrame({"prompt": [[{"role": "user", "content": p}] for p in prompts],
                          "completion": [[{"role": "assistant", "content": c}] for c in completions]})
    frame = ids.with_ids(frame).with_columns(
        source=pl.lit("gpu_check"), source_id=pl.format("row{}", pl.int_range(pl.len())), turn=pl.lit(0, pl.Int32),
        attributes=pl.lit(None, schema.POLARS_SCHEMA["attributes"]), **columns)
    return frame


def pair_rows(prompts: list[str], chosen: list[str], rejected: list[str]) -> pl.DataFrame:
    """Pairwise rows, each pair's chosen row then its rejected row."""
    from uftdata import ids

    n = len(prompts)
    rows = [row_frame(prompts, completions, label=pl.lit(label), score=pl.lit(float(label), pl.Float32))
            for completions, label in ((chosen, True), (rejected, False))]
    pair_id = ids.pair_ids(rows[0]["id"], rows[1]["id"])
    both = pl.concat([r.with_columns(pair_id=pair_id, position=pl.Series(range(n))) for r in rows])
    return both.sort("position", "label", descending=[False, True]).with_columns(kind=pl.lit("pairwise"))


def texts(tokenizer, n: int, words_each: int, rng: random.Random) -> list[str]:  # noqa: ANN001
    words = one_token_words(tokenizer)
    return [" ".join(rng.choice(words) for _ in range(words_each)) for _ in range(n)]


def template_overheads(tokenizer, lengths: dict) -> tuple[int, int]:  # noqa: ANN001
    """(prompt, completion) tokens the template adds, from one probe row of 10 + 10 words."""
    from uft_train.data import tokenize_split

    probe = pair_rows(["alpha " * 9 + "alpha"], ["beta " * 9 + "beta"], ["gamma " * 9 + "gamma"])
    examples, _ = tokenize_split(probe, tokenizer, template=None, **lengths)
    example = examples[0]
    return example.prompt_len - 10, len(example.input_ids) - example.prompt_len - 10


def write_rows(work: Path, tokenizer, *, rows: int, seq_len: int, prompt_len: int, lengths: dict) -> dict:  # noqa: ANN001
    """pairs.parquet (`rows` pairs), binary.parquet (their 2 x `rows` rows, kind binary) and
    sft.parquet (the chosen rows, kind sft) in `work`; returns what the report says of them."""
    import pyarrow.parquet as pq

    from uft_train.data import tokenize_split
    from uftdata import schema

    extra_prompt, extra_completion = template_overheads(tokenizer, lengths)
    rng = random.Random(SEED)
    completion_words = seq_len - prompt_len - extra_completion
    pairs = pair_rows(texts(tokenizer, rows, prompt_len - extra_prompt, rng),
                      texts(tokenizer, rows, completion_words, rng), texts(tokenizer, rows, completion_words, rng))
    frames = {
        "pairs": pairs,
        "binary": pairs.with_columns(kind=pl.lit("binary"), pair_id=pl.lit(None, pl.String)),
        "sft": pairs.filter(pl.col("label")).with_columns(kind=pl.lit("sft"), label=pl.lit(None, pl.Boolean),
                                                          pair_id=pl.lit(None, pl.String)),
    }
    for name, frame in frames.items():
        examples, dropped = tokenize_split(frame, tokenizer, template=None, **lengths)
        seen = sorted({(len(e.input_ids), e.prompt_len) for e in examples})
        if dropped or seen != [(seq_len, prompt_len)]:
            raise SystemExit(f"gpu_check: {name} rows tokenize to (length, prompt) {seen}, dropped {dict(dropped)}; "
                             f"expected all ({seq_len}, {prompt_len})")
        pq.write_table(schema.to_arrow(frame), work / f"{name}.parquet")
    return {"pairs": rows, "rows": {name: frame.height for name, frame in frames.items()},
            "seq_len": seq_len, "prompt_len": prompt_len, "vocab": len(tokenizer)}
