"""Padding share of the trainer's micro-batches on the real samples, padded and packed.

    python bench/padding.py [--samples ../shared/samples]

Every real sample file is prepared and tokenized as bench/drop_shares.py does (the README's uftdata
commands, recipes/mix_20k_20k.yaml's template, Mistral-7B-v0.1's tokenizer, max_length 2048 /
max_prompt_length 1024), cut into the trainer's global batches (seed 0, epoch 0, length grouping)
and micro-batches, and laid out by `uft_train.logps.row_plan`:
- padded: one example per right-padded row (`train.padding_free: false`);
- packed, sdpa, at the attention ratio (`logps.attention_ratio`) of Mistral-7B-v0.1's shape and of
  the trainer benchmark's tiny model (hidden 256, 6 layers, MLP 736), both built on the meta device;
- packed, flash attention: one row per micro-batch.
Two batchings: 8 pairs as 8 terms (dpo) and 16 rows as 16 terms (una_mse with `pairwise: rows`),
`micro_batch_size` = `batch_size`. Markdown to stdout.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import polars as pl
import torch
import yaml
from drop_shares import ROOT, SAMPLES, prepare
from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

from uft_train.batching import global_batches, make_units, split_batch
from uft_train.data import Example, tokenize_split
from uft_train.logps import attention_ratio, padded_tokens
from uft_train.shipped import shipped_tokenizer

BATCHINGS = {"8 pairs (dpo)": (True, 8), "16 rows (una_mse, pairwise: rows)": (False, 16)}


def ratios() -> dict[str, float | None]:
    """Layout name -> `attention` for `row_plan` (None: varlen kernels)."""
    with torch.device("meta"):
        mistral = MistralForCausalLM(MistralConfig())  # the defaults are Mistral-7B-v0.1's shape
        tiny = LlamaForCausalLM(LlamaConfig(vocab_size=32000, hidden_size=256, num_hidden_layers=6,
                                            num_attention_heads=4, intermediate_size=736))
    return {"packed, sdpa, 7B": attention_ratio(mistral), "packed, sdpa, tiny": attention_ratio(tiny),
            "packed, flash": None}


def share(examples: list[Example], *, pairs_as_one_term: bool, batch_size: int, padding_free: bool,
          attention: float | None) -> float:
    units = make_units(examples, pairs_as_one_term=pairs_as_one_term)
    padded = tokens = 0
    for batch in global_batches(examples, units, batch_size=batch_size, seed=0, epoch=0):
        for micro in split_batch(batch, micro_batch_size=batch_size, world_size=1, rank=0):
            lengths = [len(examples[i].input_ids) for i in micro.rows]
            padded += padded_tokens(lengths, padding_free=padding_free, attention=attention)
            tokens += sum(lengths)
    return padded / max(1, padded + tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES)
    args = parser.parse_args()
    tokenizer = shipped_tokenizer("mistral")
    template = yaml.safe_load((ROOT / "recipes" / "mix_20k_20k.yaml").read_text())["model"]["template"]
    layouts = {"padded": (False, 0.0), **{name: (True, a) for name, a in ratios().items()}}
    print(f"attention ratios: {', '.join(f'{k} {v:.3g}' for k, v in ratios().items() if v is not None)}\n")
    print("| file | examples | batching | " + " | ".join(layouts) + " |")
    print("|---|---|---|" + "---|" * len(layouts))
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in prepare(args.samples, Path(tmp)).items():
            rows = pl.read_parquet(path)
            examples, _ = tokenize_split(rows, tokenizer, template=template, max_length=2048, max_prompt_length=1024)
            has_pairs = any(e.pair_id is not None for e in examples)
            for batching, (one_term, size) in BATCHINGS.items():
                if not has_pairs and one_term:
                    continue
                cells = [share(examples, pairs_as_one_term=one_term, batch_size=size, padding_free=free, attention=a)
                         for free, a in layouts.values()]
                print(f"| {name} | {len(examples)} | {batching if has_pairs else f'{size} rows'} | "
                      + " | ".join(f"{c:.1%}" for c in cells) + " |")


if __name__ == "__main__":
    main()
