"""The miniature's base model: a tiny Llama pretrained from scratch on the world's corpus.

A pure language model, like the papers' base models: it is trained on documents, some of which are
chat transcripts (as web text holds dialogue), never on a chat-formatted training set. Documents
are packed into fixed-length sequences, each document ending in exactly one `<|end|>`
(`terminated`); that token is the tokenizer's end of turn too, as Mistral-7B-v0.1's `</s>` ends
both a document and an `[INST]` turn, so a base model knows how to stop. A chat transcript already
ends in the `<|end|>` of its last turn, which then also ends the document: the packed stream reads
`...<|assistant|>answer<|end|>` and the next document, just as a fact paragraph's stream reads
`...sentence.<|end|>` and the next one.

The folder is cached under a key of everything that determines its bytes, written atomically, and
loads with `AutoModelForCausalLM.from_pretrained(folder)` / `AutoTokenizer.from_pretrained(folder)`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import tokenizers
import torch
import transformers
from transformers import LlamaForCausalLM

from uft_train.tiny import build_tiny_model
from uft_train.tokenizer import END_OF_TURN, build_tokenizer


@dataclass(frozen=True)
class PretrainConfig:
    """Tokenizer, model shape and optimisation of the base model."""

    vocab_size: int = 1632
    """BPE vocabulary, the 7 special tokens included. 1632 (the least multiple of 32 that does) makes
    every name of the default world one token, the distractors' of its chat transcripts included;
    1152 sufficed for the world's own names, whose facts the corpus states more often."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    seq_len: int = 128
    """Tokens per packed training sequence."""
    batch_size: int = 16
    steps: int = 1200
    lr: float = 3e-3
    """Peak learning rate (AdamW), after a linear warmup; cosine decay to lr * min_lr_ratio."""
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    """Zero: the point is to memorize the facts, not to generalise past them."""
    seed: int = 0
    log_every: int = 100


SIZES = {
    "default": PretrainConfig(),
    # For a CUDA machine (the benchmark's `large` size): a wider, deeper model over a 4x world, more
    # steps. Not run on the project's CPU machine; its sizes follow the default's ratios.
    "large": PretrainConfig(vocab_size=2048, hidden_size=256, num_layers=6, num_heads=8, intermediate_size=768,
                            batch_size=64, steps=4000, lr=1e-3, warmup_steps=200, log_every=200),
    # For tests: seconds, and memorizes nothing.
    "tiny": PretrainConfig(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                           seq_len=32, batch_size=4, steps=3, warmup_steps=1, log_every=1),
}
RECORD = "pretrain.json"  # written last: its presence means the folder is complete


def cache_key(texts: Sequence[str], tokenizer_texts: Sequence[str], cfg: PretrainConfig) -> str:
    """sha256 of what determines the folder: the corpus, the tokenizer's extra texts, the config and
    the library versions (another torch may give other weights from the same seed)."""
    payload = {"texts": hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest(),
               "tokenizer_texts": hashlib.sha256(json.dumps(list(tokenizer_texts)).encode()).hexdigest(),
               "config": asdict(cfg), "torch": torch.__version__, "transformers": transformers.__version__,
               "tokenizers": tokenizers.__version__}
    if torch.cuda.is_available():  # a GPU gives other weights than the CPU; CPU keys stay as they were
        payload["device"] = "cuda"
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def terminated(text: str) -> str:
    """`text` as a pretraining document: ending in one `<|end|>` (added unless it already ends in one)."""
    return text if text.endswith(END_OF_TURN) else text + END_OF_TURN


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def packed_batches(documents: Sequence[Sequence[int]], cfg: PretrainConfig,
                   generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless [batch_size, seq_len] batches: each pass shuffles the documents, concatenates them and
    cuts the stream into sequences (the tail that does not fill one is dropped for that pass)."""
    while True:
        order = torch.randperm(len(documents), generator=generator).tolist()
        stream = torch.tensor([t for i in order for t in documents[i]], dtype=torch.long)
        sequences = stream[: len(stream) // cfg.seq_len * cfg.seq_len].view(-1, cfg.seq_len)
        for start in range(0, len(sequences) - cfg.batch_size + 1, cfg.batch_size):
            yield sequences[start:start + cfg.batch_size]


def train(model: LlamaForCausalLM, documents: Sequence[Sequence[int]], cfg: PretrainConfig,
          log: Callable[[str], None]) -> dict:
    """Full-parameter causal-LM training; returns the loss record."""
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    model.train()
    started, window, losses = time.perf_counter(), [], []
    device = next(model.parameters()).device
    for step, batch in zip(range(cfg.steps), packed_batches(documents, cfg, generator)):
        batch = batch.to(device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.item())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            losses.append({"step": step + 1, "loss": sum(window) / len(window)})
            log(f"pretrain step {step + 1}/{cfg.steps}  loss {losses[-1]['loss']:.4f}  "
                f"{time.perf_counter() - started:.0f}s")
            window = []
    model.eval()
    return {"steps": cfg.steps, "seconds": round(time.perf_counter() - started, 1),
            "final_loss": losses[-1]["loss"], "losses": losses}


def pretrain_base(texts: Sequence[str], out_dir: Path, cfg: PretrainConfig = SIZES["default"], *,
                  tokenizer_texts: Sequence[str] = (), log: Callable[[str], None] = print) -> Path:
    """The base model folder for `texts` under `out_dir` (`base-<key>`), trained unless cached.

    The tokenizer is trained on `texts` plus `tokenizer_texts` (text the model never trains on,
    e.g. the questions' words, so a tokenizer covers the whole world's language as a real one would).
    """
    out_dir = Path(out_dir)
    key = cache_key(texts, tokenizer_texts, cfg)
    folder = out_dir / f"base-{key[:16]}"
    if (folder / RECORD).is_file():
        log(f"pretrain: reusing {folder}")
        return folder
    tokenizer = build_tokenizer([*texts, *tokenizer_texts], vocab_size=cfg.vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                             num_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                             max_position_embeddings=max(512, cfg.seq_len), seed=cfg.seed)
    # Special tokens are matched before pre-tokenization: `text<|end|>` is text's ids, then `<|end|>`'s.
    documents = [tokenizer(terminated(t), add_special_tokens=False)["input_ids"] for t in texts]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        record = train(model.to("cuda" if torch.cuda.is_available() else "cpu"), documents, cfg, log)  # type: ignore[arg-type]  # PreTrainedModel.to is typed through functools.wraps, as if unbound
    model = model.to("cpu")  # type: ignore[arg-type]  # PreTrainedModel.to is typed through functools.wraps, as if unbound
    record.update(key=key, config=asdict(cfg), documents=len(documents), tokens=sum(map(len, documents)),
                  parameters=sum(p.numel() for p in model.parameters()), torch=torch.__version__,
                  transformers=transformers.__version__)
    return save(model, tokenizer, record, folder)


def save(model: LlamaForCausalLM, tokenizer: transformers.PreTrainedTokenizerBase, record: dict,
         folder: Path) -> Path:
    """Write into a temporary sibling, then rename: a reader sees a complete folder or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)  # safetensors (the default; transformers 5 has no other format)
    tokenizer.save_pretrained(tmp)
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if folder.exists() and not (folder / RECORD).is_file():
        shutil.rmtree(folder)  # an interrupted older attempt
    try:
        tmp.rename(folder)
    except OSError:
        if not (folder / RECORD).is_file():
            raise
        shutil.rmtree(tmp)  # another process finished the same key first: same bytes, keep theirs
    return folder
