"""Row ids, groups and pair ids as polars expressions (docs/design.md, "Ids").

`id` is xxh3-128 over the canonical text of (prompt, completion): per message
`role + "\\x1f" + content + "\\x1e"`, prompt then completion, `"\\x1d"` between them; no Unicode
normalization. `group` is the same hash over the first user message's content alone, `pair_id`
over the chosen id followed by the rejected id. The hash runs in the `polars-hash` plugin, whose
`xxh3_128` equals the `xxhash` library's (tests pin both); we do not use polars' own `hash()`,
which is documented as unstable across versions.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
from polars_hash import NonCryptographicHashingNameSpace as _Hashes  # the `nchash` namespace, typed

UNIT_SEP, RECORD_SEP, GROUP_SEP = "\x1f", "\x1e", "\x1d"
_TWO_64 = 1 << 64


def message_texts(messages: pl.Expr) -> pl.Expr:
    """Each message's canonical piece, `role \x1f content \x1e`, as a list of strings."""
    element = pl.element().struct
    return messages.list.eval(
        pl.concat_str(element.field("role"), pl.lit(UNIT_SEP), element.field("content"), pl.lit(RECORD_SEP))
    )


def message_text(messages: pl.Expr) -> pl.Expr:
    """Canonical text of a `list<struct<role, content>>` column."""
    return message_texts(messages).list.join("")


def turn_text(texts: pl.Expr, pos: pl.Expr) -> pl.Expr:
    """Canonical text of (messages[:pos], [messages[pos]]) from a conversation's `message_texts`.

    Equal to `canonical_text(prompt, completion)` of that turn, but each message's piece is built
    once per conversation and the list ops move string views, so only the final join copies bytes:
    unfold's prompts repeat every earlier message, and this is its hot path."""
    return pl.concat_list(texts.list.slice(0, pos), pl.lit(GROUP_SEP), texts.list.get(pos)).list.join("")


def canonical_text(prompt: pl.Expr, completion: pl.Expr) -> pl.Expr:
    return pl.concat_str(message_text(prompt), pl.lit(GROUP_SEP), message_text(completion))


def first_user_content(prompt: pl.Expr) -> pl.Expr:
    element = pl.element().struct
    return prompt.list.eval(element.field("content").filter(element.field("role") == "user").first()).list.first()


def hex_digests(text: pl.Series) -> pl.Series:
    """xxh3-128 of each string's UTF-8 bytes as 32 lowercase hex chars (nulls stay null)."""
    frame = text.to_frame("t").select(h=_Hashes(pl.col("t")).xxh3_128())
    halves = frame.select(
        hi=(pl.col("h") // pl.lit(_TWO_64, dtype=pl.UInt128)).cast(pl.UInt64),
        lo=(pl.col("h") % pl.lit(_TWO_64, dtype=pl.UInt128)).cast(pl.UInt64),
    )
    # Big-endian hi then lo is xxhash's canonical (hexdigest) byte order.
    raw = np.empty((len(halves), 2), dtype=">u8")
    raw[:, 0] = halves["hi"].fill_null(0).to_numpy()
    raw[:, 1] = halves["lo"].fill_null(0).to_numpy()
    digests = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(raw), [None, pa.py_buffer(raw.tobytes())])
    hexed = pl.Series(text.name, digests).cast(pl.Binary).bin.encode("hex")
    return pl.select(pl.when(text.is_not_null()).then(hexed)).to_series().alias(text.name)


def keyed_uint64(key: pl.Series, seed: int) -> pl.Series:
    """xxh3-64 of `"{seed}\\x1f{key}"`: the seeded, input-order-free rank used by mixing and splits."""
    keyed = key.to_frame("k").select(_Hashes(pl.concat_str(pl.lit(f"{seed}{UNIT_SEP}"), pl.col("k"))).xxh3_64())
    return keyed.to_series().alias(key.name)


def with_ids(frame: pl.DataFrame) -> pl.DataFrame:
    """Add `id` and `group` computed from `prompt` and `completion`."""
    texts = frame.select(
        id=canonical_text(pl.col("prompt"), pl.col("completion")),
        group=first_user_content(pl.col("prompt")),
    )
    return frame.with_columns(id=hex_digests(texts["id"]), group=hex_digests(texts["group"]))


def pair_ids(chosen_ids: pl.Series, rejected_ids: pl.Series) -> pl.Series:
    return hex_digests(pl.select(pl.concat_str(chosen_ids, rejected_ids)).to_series().alias("pair_id"))
