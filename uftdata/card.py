"""The dataset card (README.md) of a mixture folder, generated from its manifest.

Its YAML `configs` block is what lets `datasets.load_dataset(MIXTURE_DIR)` find the splits.
"""

from __future__ import annotations

import yaml

READING = (
    "Counts are rows after unfolding (one row per assistant turn); pairwise rows count 2 per pair. "
    "The UFT paper's \"20k\" HelpSteer2 is all 20,324 train rows and its 16k-260k UltraChat sizes are "
    "read here as unfolded rows: the paper does not say which unit it counts."
)


def render_card(manifest: dict) -> str:
    splits = list(manifest["counts"])
    header = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
        # `datasets` keys its cache of a local folder by the folder's name and this card's YAML, not
        # by the files: without these sizes, a mixture rebuilt in the same place would load stale
        # rows from the cache. With them, a rebuild gets a new cache entry, and a wrong row count
        # is an error (datasets verifies num_examples).
        "dataset_info": {
            "config_name": "default",
            "splits": [{"name": s, "num_examples": manifest["counts"][s]["rows"]} for s in splits],
            "download_size": sum(f["bytes"] for f in manifest["files"]),
        },
        "tags": ["uft", "sft", "preference", "feedback"],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "", f"# {manifest['name']}", "",
             "A Unified Fine-Tuning (UFT) mixture built by `uftdata mix`: instruction rows (kind `sft`, score 1) "
             "mixed with feedback rows (scores in [0,1]) in one row schema, for one training stage.", "",
             "## Sources", "",
             "| source | take | train rows | test rows | repeated | dropped |",
             "|---|---|---:|---:|---:|---|"]
    for s in manifest["sources"]:
        dropped = ", ".join(f"{k} {v}" for k, v in s["accounting"]["dropped"].items()) or "-"
        lines.append(f"| {s['name']} | {s['take']} | {s['rows_train']} | {s['rows_test']} | "
                     f"{s['repeated_rows']} | {dropped} |")
    lines += ["", "## Counts", ""]
    for split, counts in manifest["counts"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in counts["by_kind"].items())
        sources = ", ".join(f"{k} {v}" for k, v in counts["by_source"].items())
        lines.append(f"- **{split}**: {counts['rows']} rows; by kind: {kinds}; by source: {sources}")
    lines += ["", f"Seed {manifest['seed']}; on_short `{manifest['on_short']}`; content hash "
              f"`{manifest['content_hash']}`; built with uft {manifest['versions']['uft']}.", "",
              READING, "",
              "## Use", "", "```python", "import datasets",
              f"ds = datasets.load_dataset(\"path/to/{manifest['name']}\")", "```", "",
              "Train on it with `uft-train RECIPE.yaml` (the recipe's `data.path` points at this folder). "
              "Columns: `prompt` and `completion` (message lists), `score`, `kind`, `label`, `pair_id`, "
              "`source`, `source_id`, `group`, `turn`, `attributes`; `manifest.json` has the provenance.", ""]
    return "\n".join(lines)
