"""bench_train.py's rows for its two shapes, in the row schema, and each shape's model and lengths.

- uniform: synthetic pairs whose rendered prompt is 64 tokens and whole sequence 256 with the
  project's 512-token tokenizer (no padding, no truncation): it measures per-step overhead.
- real: the real hh-rlhf pairs of ../shared/samples (both files), converted by uftdata's own
  `feedback` adapter, rendered with recipes/mix_20k_20k.yaml's template and Mistral-7B-v0.1's
  tokenizer (`uft_train.shipped.shipped_tokenizer("mistral")`, 32,000 pieces): variable lengths.
In both, `sft.parquet` holds the chosen rows as sft rows and `pairs.parquet` the pairs (chosen and
rejected rows, kind pairwise). Imported by the children only (polars, torch, transformers).
"""

from __future__ import annotations

import random
import shutil
import statistics
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parent
SAMPLES = BENCH.parents[1] / "shared" / "samples"
HH_FILES = ("hh-rlhf_harmless-base_test.jsonl", "hh-rlhf_helpful-base_train.jsonl")
RECIPE = BENCH.parent / "recipes" / "mix_20k_20k.yaml"  # the real shape's template and lengths
SEED = 0
# Model dimensions shared by both shapes; the vocabulary is the tokenizer's (512 or 32,000).
TINY = {"hidden_size": 256, "num_layers": 6, "num_heads": 4, "intermediate_size": 736, "max_position_embeddings": 512}
SEQ_LEN, PROMPT_LEN = 256, 64  # the uniform shape's lengths
SHAPES = ("uniform", "real")


def shape_settings(shape: str) -> dict:
    """The recipe's model.tiny, model.template and data lengths for a shape."""
    if shape == "uniform":
        return {"tiny": dict(TINY), "template": None, "max_length": SEQ_LEN, "max_prompt_length": 2 * PROMPT_LEN}
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    data = recipe["data"]
    return {"tiny": {**TINY, "max_position_embeddings": data["max_length"], "tokenizer": "mistral"},
            "template": recipe["model"]["template"], "max_length": data["max_length"],
            "max_prompt_length": data["max_prompt_length"]}


def tokenizer_for(shape: str, folder: Path):  # noqa: ANN201 - a transformers tokenizer
    """The shape's tokenizer with its chat template and a pad token, as uft-train sets them, read from
    `folder` (built and saved there first if missing): TRL loads it from there, as from a model's folder."""
    if shape == "uniform":
        from uft_train.tokenizer import load_or_build_tokenizer

        return load_or_build_tokenizer(folder)
    from transformers import AutoTokenizer

    from uft_train.shipped import shipped_tokenizer

    if not (folder / "tokenizer.json").is_file():
        tokenizer = shipped_tokenizer("mistral")
        tokenizer.chat_template = shape_settings("real")["template"]
        tokenizer.pad_token = tokenizer.eos_token  # uft_train.model does the same (masks come from lengths)
        tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def synthetic_rows(tokenizer, pairs: int) -> tuple[pl.DataFrame, pl.DataFrame]:  # noqa: ANN001
    """`pairs` pairs (chosen then rejected, one prompt each) whose rendered prompt is PROMPT_LEN tokens and
    whole SEQ_LEN, and their chosen rows as sft rows: valid rows of the schema, ids included."""
    from generate import WORDS

    from uftdata import ids, schema

    # Each message sits between special tokens, which the tokenizer matches before BPE, and the
    # byte-level pre-tokenizer splits on spaces: " w1 w2 ..." has the summed token counts of its words.
    cost = {w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) for w in WORDS}
    ones = sorted(w for w in WORDS if cost[w] == 1)
    rng = random.Random(SEED)

    def message(role: str, n_tokens: int) -> list[dict]:
        words = []
        while n_tokens > 0:
            word = rng.choice(WORDS)
            word = word if cost[word] <= n_tokens else rng.choice(ones)
            words.append(word)
            n_tokens -= cost[word]
        return [{"role": role, "content": "".join(" " + w for w in words)}]

    # Prompt: <|user|>...<|end|><|assistant|>; completion: ...<|end|>.
    prompts = [message("user", PROMPT_LEN - 3) for _ in range(pairs)]
    chosen, rejected = (ids.with_ids(pl.DataFrame({"prompt": prompts, "completion": [
        message("assistant", SEQ_LEN - PROMPT_LEN - 1) for _ in range(pairs)]})) for _ in range(2))
    common = {"pair_id": ids.pair_ids(chosen["id"], rejected["id"]), "position": pl.Series(range(pairs))}
    rows = pl.concat([chosen.with_columns(label=pl.lit(True), score=pl.lit(1.0, pl.Float32), **common),
                      rejected.with_columns(label=pl.lit(False), score=pl.lit(0.0, pl.Float32), **common)])
    rows = rows.sort("position", "label", descending=[False, True]).with_columns(  # pairs in order, chosen first
        kind=pl.lit("pairwise"), source=pl.lit("bench_train"), turn=pl.lit(0, pl.Int32),
        source_id=pl.format("{}:{}", "position", pl.when("label").then(pl.lit("chosen")).otherwise(pl.lit("rejected"))),
        attributes=pl.lit(None, schema.POLARS_SCHEMA["attributes"]))
    return rows, as_sft(rows)


def as_sft(rows: pl.DataFrame) -> pl.DataFrame:
    """The chosen rows of pairwise rows as sft rows (no label, no pair)."""
    return rows.filter(pl.col("label")).with_columns(kind=pl.lit("sft"), label=pl.lit(None, pl.Boolean),
                                                     pair_id=pl.lit(None, pl.String))


def real_rows() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The hh-rlhf samples' pairs through uftdata's `feedback` conversion (its default options), and
    their chosen rows as sft rows."""
    from uftdata.accounting import Summary
    from uftdata.feedback import FeedbackOptions, adapter_for
    from uftdata.reader import expand_inputs
    from uftdata.rejects import Rejects
    from uftdata.rows import convert_files

    missing = [name for name in HH_FILES if not (SAMPLES / name).is_file()]
    if missing:
        raise SystemExit(f"bench: the real shape needs {', '.join(missing)} in {SAMPLES}")
    frames = []
    for name in HH_FILES:
        summary = Summary("feedback")
        frames += convert_files(expand_inputs([SAMPLES / name]), command="feedback", fmt=None, source=name.split("_")[0],
                                adapter_for=lambda layout: adapter_for(layout, FeedbackOptions()),
                                rejects=Rejects("raise"), summary=summary)
        summary.check()
    rows = pl.concat(frames)
    return rows, as_sft(rows)


def write_rows(work: Path, shape: str, pairs: int) -> dict:
    """Write the shape's tokenizer folder (uniform), pairs.parquet and sft.parquet; returns what the report
    says of the rows (counts and the token lengths uft-train's tokenization gives)."""
    import pyarrow.parquet as pq

    from uft_train.data import tokenize_split
    from uftdata import schema

    if shape == "real":
        shutil.rmtree(work / "tokenizer", ignore_errors=True)  # built afresh from the installed package
    tokenizer = tokenizer_for(shape, work / "tokenizer")
    rows, sft = synthetic_rows(tokenizer, pairs) if shape == "uniform" else real_rows()
    settings = shape_settings(shape)
    lengths: list[int] = []
    for name, frame in (("pairs", rows), ("sft", sft)):
        examples, dropped = tokenize_split(frame, tokenizer, template=settings["template"],
                                           max_length=settings["max_length"],
                                           max_prompt_length=settings["max_prompt_length"])
        seen = {(len(e.input_ids), e.prompt_len) for e in examples}
        if shape == "uniform" and (dropped or seen != {(SEQ_LEN, PROMPT_LEN)}):  # the arithmetic broke
            raise RuntimeError(f"{name}: rows tokenize to (length, prompt) {sorted(seen)}, dropped {dict(dropped)}; "
                               f"expected all ({SEQ_LEN}, {PROMPT_LEN})")
        if name == "pairs":
            lengths = [len(e.input_ids) for e in examples]
            n_dropped = sum(dropped.values())
        pq.write_table(schema.to_arrow(frame), work / f"{name}.parquet")
    return {"pairs": rows.height // 2, "rows": rows.height, "rows_dropped": n_dropped,
            "vocab": len(tokenizer), "length_min": min(lengths), "length_median": statistics.median(lengths),
            "length_max": max(lengths), "length_mean": round(statistics.fmean(lengths), 1)}


def trl_layout(method: str, rows: list[dict]) -> tuple[type, type, list[dict], str]:
    """(trainer class, config class, the rows in its layout, the config's gradient-checkpointing
    keyword) of `trl_dpo` (chosen rows with their pair's rejected completion) or `trl_kto` (each row
    with its label). transformers 5 renamed gradient_checkpointing to activation_checkpointing (the
    old name warns)."""
    import dataclasses

    import trl

    if method == "trl_dpo":
        trainer_cls, config_cls = trl.DPOTrainer, trl.DPOConfig
        rejected = {r["pair_id"]: r for r in rows if not r["label"]}
        data = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": rejected[r["pair_id"]]["completion"]}
                for r in rows if r["label"]]
    else:
        trainer_cls, config_cls = trl.KTOTrainer, trl.KTOConfig
        data = [{"prompt": r["prompt"], "completion": r["completion"], "label": r["label"]} for r in rows]
    names = {f.name for f in dataclasses.fields(config_cls)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return trainer_cls, config_cls, data, checkpointing
