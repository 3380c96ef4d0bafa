"""Ids (docs/design.md, "Ids"): the polars-hash path must equal the `xxhash` library on the canonical text.

The canonical text is built by hand here, so a change in separators or message order fails loudly.
"""

from __future__ import annotations

import polars as pl
import pytest
import xxhash
from polars.testing import assert_series_equal

from uftdata import schema
from uftdata.ids import hex_digests, pair_ids, with_ids


def xxh(text: str) -> str:
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def frame(prompts: list[list[dict]], completions: list[list[dict]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"prompt": prompts, "completion": completions},
        schema={"prompt": schema.POLARS_MESSAGES, "completion": schema.POLARS_MESSAGES},
    )


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "",
        " ",
        "Crème brûlée, 東京, Ünïcödé, emoji 🍜",
        "e\u0301",  # decomposed é: no Unicode normalization, so it differs from "\u00e9"
        "\u00e9",
        "line\nbreak\ttab\x1f\x1e\x1d",
        "x" * 10_000,
    ],
)
def test_hex_digests_equal_xxhash(text: str) -> None:
    got = hex_digests(pl.Series("t", [text]))
    assert got.to_list() == [xxh(text)]
    assert got.name == "t"


def test_hex_digests_keep_nulls_and_order() -> None:
    got = hex_digests(pl.Series("t", ["a", None, "", "b"]))
    assert got.to_list() == [xxh("a"), None, xxh(""), xxh("b")]


def test_hex_digests_no_normalization() -> None:
    composed, decomposed = hex_digests(pl.Series(["\u00e9", "e\u0301"])).to_list()
    assert composed != decomposed


def test_with_ids_single_turn() -> None:
    rows = with_ids(frame([[{"role": "user", "content": "Hi"}]], [[{"role": "assistant", "content": "Hello!"}]]))
    # user \x1f Hi \x1e | \x1d | assistant \x1f Hello! \x1e
    assert rows["id"].to_list() == [xxh("user\x1fHi\x1e\x1dassistant\x1fHello!\x1e")]
    assert rows["group"].to_list() == [xxh("Hi")]


def test_with_ids_multi_turn_with_system() -> None:
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Boil an egg?"},
        {"role": "assistant", "content": "Nine minutes."},
        {"role": "user", "content": "Soft?"},
    ]
    completion = [{"role": "assistant", "content": "Six minutes."}]
    rows = with_ids(frame([prompt], [completion]))
    text = (
        "system\x1fBe brief.\x1e"
        "user\x1fBoil an egg?\x1e"
        "assistant\x1fNine minutes.\x1e"
        "user\x1fSoft?\x1e"
        "\x1d"
        "assistant\x1fSix minutes.\x1e"
    )
    assert rows["id"].to_list() == [xxh(text)]
    # group: the FIRST user message's content only (not the system message, not the last user turn)
    assert rows["group"].to_list() == [xxh("Boil an egg?")]


def test_with_ids_non_ascii() -> None:
    rows = with_ids(frame([[{"role": "user", "content": "Wie heißt 東京?"}]], [[{"role": "assistant", "content": "Tōkyō 🗼"}]]))
    assert rows["id"].to_list() == [xxh("user\x1fWie heißt 東京?\x1e\x1dassistant\x1fTōkyō 🗼\x1e")]
    assert rows["group"].to_list() == [xxh("Wie heißt 東京?")]


def test_with_ids_responses_to_one_prompt_share_group_not_id() -> None:
    prompt = [{"role": "user", "content": "Name a fruit."}]
    rows = with_ids(frame([prompt, prompt], [[{"role": "assistant", "content": "Apple."}],
                                             [{"role": "assistant", "content": "Pear."}]]))
    assert rows["group"].n_unique() == 1
    assert rows["id"].n_unique() == 2


def test_with_ids_separators_keep_messages_apart() -> None:
    # Same characters, different message boundaries: the separators make the ids differ.
    a = frame([[{"role": "user", "content": "ab"}]], [[{"role": "assistant", "content": "c"}]])
    b = frame([[{"role": "user", "content": "a"}]], [[{"role": "assistant", "content": "bc"}]])
    assert with_ids(a)["id"][0] != with_ids(b)["id"][0]


def test_with_ids_group_is_null_without_user_message() -> None:
    rows = with_ids(frame([[{"role": "system", "content": "S"}], []],
                          [[{"role": "assistant", "content": "C"}], [{"role": "assistant", "content": "C"}]]))
    assert rows["group"].to_list() == [None, None]
    assert rows["id"].to_list() == [xxh("system\x1fS\x1e\x1dassistant\x1fC\x1e"), xxh("\x1dassistant\x1fC\x1e")]


def test_with_ids_keeps_other_columns() -> None:
    base = frame([[{"role": "user", "content": "Hi"}]], [[{"role": "assistant", "content": "Yo"}]])
    rows = with_ids(base.with_columns(source=pl.lit("s")))
    assert rows.columns == ["prompt", "completion", "source", "id", "group"]
    assert_series_equal(rows["prompt"], base["prompt"])


def test_pair_ids_hash_chosen_then_rejected() -> None:
    chosen, rejected = xxh("chosen"), xxh("rejected")
    got = pair_ids(pl.Series([chosen]), pl.Series([rejected]))
    assert got.to_list() == [xxh(chosen + rejected)]
    assert got.name == "pair_id"
    assert pair_ids(pl.Series([rejected]), pl.Series([chosen])).to_list() != got.to_list()
