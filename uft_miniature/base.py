"""The world's base model, and how much of the world it knows.

`python -m uft_miniature.base --out DIR [--size default|tiny]` pretrains (or reuses) the base model
of the default world and prints its fact recall on every pretraining fact, its perplexity on the
training and held-out texts, its (zero-shot, in chat) accuracy on the held-out questions, and its
KLs against itself (0: a check that the wiring compares like with like).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from uft_miniature.evaluate import EvalSet, document_ids, evaluate, fact_recall, perplexity
from uft_miniature.grammar import FILLERS, Question
from uft_miniature.lm import HFLanguageModel
from uft_miniature.pretrain import SIZES, PretrainConfig, pretrain_base
from uft_miniature.world import World, WorldConfig, build_world, eval_questions, fact_probes, pretraining_corpus


def tokenizer_texts(world: World) -> list[str]:
    """The language the model is asked in but never trained on: a question per fact, the fillers."""
    return [Question.about(f).prompt for f in world.facts] + list(FILLERS)


def prepare_base(world: World, out_dir: Path, cfg: PretrainConfig = SIZES["default"], *,
                 log: Callable[[str], None] = print) -> Path:
    """The folder of `world`'s base model under `out_dir`, pretrained unless cached."""
    train, _ = pretraining_corpus(world)
    return pretrain_base(train, out_dir, cfg, tokenizer_texts=tokenizer_texts(world), log=log)


def measure_base(world: World, folder: Path, *, batch_size: int = 64) -> dict[str, float]:
    """Fact recall on every pretraining fact, perplexity on train and held-out texts, eval metrics
    (`evaluate` against the model itself: kl and kl_pretrain are 0)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    lm = HFLanguageModel(model, tokenizer, batch_size)
    train, heldout = pretraining_corpus(world)
    started = time.perf_counter()
    n_eval = len(world.pools["eval"])
    metrics = evaluate(model, tokenizer, model, EvalSet(tuple(eval_questions(world, n_eval)), tuple(heldout),
                                                        tuple(fact_probes(world, 200))), batch_size=batch_size)
    metrics["eval_seconds"] = time.perf_counter() - started
    metrics["fact_recall_all_train_facts"] = fact_recall(lm, fact_probes(world, len(world.facts)))
    metrics["perplexity_train"] = perplexity(lm, document_ids(tokenizer, train))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="cache folder for base models")
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--seed", type=int, default=0, help="WorldConfig.seed")
    args = parser.parse_args()
    world = build_world(WorldConfig(seed=args.seed))
    folder = prepare_base(world, args.out, SIZES[args.size])
    record = json.loads((folder / "pretrain.json").read_text())
    print(f"base model: {folder}  ({record['parameters']:,} parameters, {record['steps']} steps, "
          f"{record['seconds']} s, final loss {record['final_loss']:.4f})")
    print(json.dumps(measure_base(world, folder), indent=2))


if __name__ == "__main__":
    main()
