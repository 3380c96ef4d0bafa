"""The project's own tokenizer: a small byte-level BPE trained locally, so the demo, the tests and
the CPU benchmarks never download one.

Deterministic: the same texts give the same `tokenizer.json` bytes, so the reference-cache key
(which hashes the tokenizer folder) is stable across runs and machines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, *ROLE_TOKENS, END_OF_TURN)

# `<|role|>content<|end|>` per message. The rendered prompt (with the generation prompt) is a string
# prefix of the rendered prompt+completion and ends in a special token, which the tokenizer matches
# before pre-tokenization, so it is also a token prefix; the completion's `<|end|>` is trained on.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

# Used only when the package is installed without the bundled data/ (e.g. from a wheel).
FALLBACK_TEXT = (
    "How long should I boil an egg for a runny yolk? Lower the egg into water that is already "
    "boiling and cook it for six minutes, then move it to cold water for a minute. "
    "What is the capital of Australia? The capital of Australia is Canberra, a city built for the "
    "purpose as a compromise between Sydney and Melbourne. "
    "Can you explain what a Python list comprehension is? It builds a new list from an iterable in "
    "one expression: squares = [x * x for x in range(10) if x % 2 == 0]. "
    "Thank you, that was helpful! You're welcome; ask me anything else about cooking, travel, "
    "programming or science. The quick brown fox jumps over the lazy dog 0123456789 times."
)


def bundled_texts(folder: Path = DATA_DIR) -> list[str]:
    """Every string value of every record in `folder/*.jsonl` (sorted by file name), in file order."""
    texts: list[str] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.extend(_strings(json.loads(line)))
    return texts


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def build_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE of `vocab_size` tokens (specials included) trained on `texts`.

    `texts=None` trains on the bundled data/*.jsonl, or on a fixed built-in text when data/ is absent.
    Special tokens take ids 0-6 in SPECIAL_TOKENS order (`<|pad|>` = 0, so pad != eos).
    """
    if texts is None:
        texts = bundled_texts() or [FALLBACK_TEXT]
    backend = Tokenizer(models.BPE())
    # No regex split beyond GPT-2's; no prefix space, so "<|user|>Hi" and "Hi" tokenize "Hi" alike.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        # Every byte is in the vocabulary even if the texts never use it: no unknown tokens, ever.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        additional_special_tokens=[*ROLE_TOKENS, END_OF_TURN], model_max_length=1 << 30,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_tokenizer(name: str = "project") -> PreTrainedTokenizerFast:
    """`model.tiny.tokenizer`: `project` builds the bundled BPE; `mistral` and `qwen2` are the real
    ones installed packages ship (uft_train/shipped.py)."""
    if name == "project":
        return build_tokenizer()
    from uft_train.shipped import shipped_tokenizer

    return shipped_tokenizer(name)


def load_or_build_tokenizer(folder: Path, name: str = "project") -> PreTrainedTokenizerFast:
    """The tokenizer saved in `folder`, or a fresh `tiny_tokenizer(name)` saved there first."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    tokenizer = tiny_tokenizer(name)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    return tokenizer
