"""The baseline: `uftdata unfold`'s unfolding written the way a `datasets` user would write it.

    python bench/datasets_unfold.py IN.jsonl OUT.parquet [--ids] [--cache-dir DIR]

One row per assistant turn of each raw UltraChat conversation (`data` = [user, assistant, ...]):
prompt (every message before the turn, as {role, content}), completion (the turn), score 1.0,
kind "sft", source (IN's name up to its first dot, as uftdata's default), source_id
("<record id>#<turn>"), turn (assistant messages in the prompt). With --ids also `id` and `group`,
hashed per row in Python with `xxhash.xxh3_128_hexdigest` (of the UTF-8 bytes) over the same canonical text as
uftdata's (docs/design.md, "Ids"); without, the rows have no ids or groups.

Unlike uftdata it checks nothing (roles, empty messages) and counts no dropped rows; the generated
input needs none of that. `load_dataset` and `map` write Arrow cache files under --cache-dir, which
is part of the cost a user pays; bench_data.py starts every run with an empty one. `to_parquet`
uses its defaults (snappy compression), as a user would.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import datasets
import xxhash

UNIT_SEP, RECORD_SEP, GROUP_SEP = "\x1f", "\x1e", "\x1d"


def canonical_text(prompt: list[dict[str, str]], completion: list[dict[str, str]]) -> str:
    def text(messages: list[dict[str, str]]) -> str:
        return "".join(m["role"] + UNIT_SEP + m["content"] + RECORD_SEP for m in messages)

    return text(prompt) + GROUP_SEP + text(completion)


def unfold_batch(batch: dict[str, list], *, source: str, ids: bool) -> dict[str, list]:
    columns = ["prompt", "completion", "score", "kind", "source", "source_id", "turn"]
    rows: dict[str, list] = {name: [] for name in columns + (["id", "group"] if ids else [])}
    for record_id, data in zip(batch["id"], batch["data"]):
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(data)]
        for pos in range(1, len(messages), 2):
            prompt, completion, turn = messages[:pos], [messages[pos]], pos // 2
            rows["prompt"].append(prompt)
            rows["completion"].append(completion)
            rows["score"].append(1.0)
            rows["kind"].append("sft")
            rows["source"].append(source)
            rows["source_id"].append(f"{record_id}#{turn}")
            rows["turn"].append(turn)
            if ids:
                rows["id"].append(xxhash.xxh3_128_hexdigest(canonical_text(prompt, completion).encode()))
                rows["group"].append(xxhash.xxh3_128_hexdigest(messages[0]["content"].encode()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--ids", action="store_true", help="Also compute id and group per row (xxhash in Python).")
    parser.add_argument("--cache-dir", type=Path, default=None, help="datasets cache folder (default: datasets').")
    args = parser.parse_args()

    datasets.disable_progress_bars()  # the output goes to a log file; the bars cost nothing measurable
    raw = datasets.load_dataset(
        "json", data_files=str(args.input), split="train", cache_dir=str(args.cache_dir) if args.cache_dir else None
    )
    rows = raw.map(
        unfold_batch,
        batched=True,
        remove_columns=raw.column_names,
        fn_kwargs={"source": args.input.name.split(".")[0], "ids": args.ids},
    )
    rows.to_parquet(str(args.output))
    print(f"datasets.map: {raw.num_rows} conversations -> {rows.num_rows} rows in {args.output}")


if __name__ == "__main__":
    main()
