"""The dataset card (README.md) of a mixture, generated from its manifest: the one in the mixture
folder, and the one `uftdata publish` uploads (which adds the repository id and a score histogram).

Its YAML `configs` block is what lets `datasets.load_dataset(MIXTURE_DIR or ORG/NAME)` find the splits.
"""

from __future__ import annotations

import yaml

from uftdata.manifest import Manifest, SourceEntry

READING = (
    "Counts are rows after unfolding (one row per assistant turn); pairwise rows count 2 per pair. "
    "The UFT paper's \"20k\" HelpSteer2 is all 20,324 train rows and its 16k-260k UltraChat sizes are "
    "read here as unfolded rows: the paper does not say which unit it counts."
)
HISTOGRAM = "score_histogram.png"
UNKNOWN = "not recorded"


def render_card(manifest: Manifest, *, repo_id: str | None = None, histogram: bool = False,
                license: str | None = None) -> str:
    """The card's markdown. `histogram`: the card shows HISTOGRAM (uploaded beside it)."""
    origins = [source_origins(s) for s in manifest.sources]
    lines = ["---", yaml.safe_dump(card_header(manifest, license or mixture_license(origins)), sort_keys=False).rstrip(),
             "---", "", f"# {manifest.name}", "",
             "A Unified Fine-Tuning (UFT) mixture built by `uftdata mix`: instruction rows (kind `sft`, score 1) "
             "mixed with feedback rows (scores in [0,1]) in one row schema, for one training stage.", ""]
    if histogram:
        lines += [f"![Scores by kind and source]({HISTOGRAM})", ""]
    lines += sources_section(manifest, origins) + counts_section(manifest) + use_section(manifest, repo_id)
    return "\n".join(lines)


def card_header(manifest: Manifest, license: str) -> dict:
    splits = list(manifest.counts)
    rows = sum(c.rows for c in manifest.counts.values())
    return {
        "license": license,
        "pretty_name": manifest.name,
        "size_categories": [size_category(rows)],
        "task_categories": ["text-generation"],
        "tags": ["uft", "sft", "preference", "feedback"],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits]}],
        # `datasets` keys its cache of a local folder by the folder's name and this card's YAML, not
        # by the files: without these sizes, a mixture rebuilt in the same place would load stale
        # rows from the cache. With them, a rebuild gets a new cache entry, and a wrong row count
        # is an error (datasets verifies num_examples).
        "dataset_info": {
            "config_name": "default",
            # num_bytes is required by datasets' parser (without it the whole list is ignored); the
            # shards' Parquet bytes stand in for the in-memory size, which would need a full read.
            "splits": [{"name": s, "num_bytes": split_bytes(manifest, s), "num_examples": manifest.counts[s].rows}
                       for s in splits],
            "download_size": sum(f.bytes for f in manifest.files),
        },
    }


def split_bytes(manifest: Manifest, split: str) -> int:
    return sum(f.bytes for f in manifest.shards(split))


def size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return name
    return "1M<n<10M" if rows < 10_000_000 else "n>10M"


def source_origins(source: SourceEntry) -> list[dict]:
    """What each source was made from: the upstream command's inputs (file or hf:// URL, revision,
    license), or the schema file itself when it carries no upstream summary."""
    origins = []
    for f in source.files:
        upstream = (f.upstream or {}).get("inputs") or [f.to_dict()]
        for item in upstream:
            origins.append({"read": item.get("url") or item.get("file") or item.get("name"),
                            "revision": item.get("revision"), "license": item.get("license")})
    return origins


def mixture_license(origins: list[list[dict]]) -> str:
    """The sources' one license when they agree and all are known; else `other` (the card lists them)."""
    licenses = {o["license"] for source in origins for o in source}
    return licenses.pop() if len(licenses) == 1 and None not in licenses else "other"


def sources_section(manifest: Manifest, origins: list[list[dict]]) -> list[str]:
    lines = ["## Sources", "",
             "| source | read from | revision | license | take | train rows | test rows | repeated | dropped |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    for source, items in zip(manifest.sources, origins):
        read = "<br>".join(sorted({f"`{o['read']}`" for o in items}))
        revisions = ", ".join(sorted({o["revision"][:12] for o in items if o["revision"]})) or "local file"
        licenses = ", ".join(sorted({o["license"] or UNKNOWN for o in items}))
        dropped = ", ".join(f"{k} {v}" for k, v in source.accounting.dropped.items()) or "-"
        lines.append(f"| {source.name} | {read} | {revisions} | {licenses} | {source.take} | "
                     f"{source.rows_train} | {source.rows_test} | {source.repeated_rows} | {dropped} |")
    lines += ["", "Licenses are those the sources' cards declare on the Hub; a local file's is not recorded: "
              "check it before you share this mixture.", ""]
    return lines


def counts_section(manifest: Manifest) -> list[str]:
    lines = ["## Counts", ""]
    for split, counts in manifest.counts.items():
        kinds = ", ".join(f"{k} {v}" for k, v in counts.by_kind.items())
        sources = ", ".join(f"{k} {v}" for k, v in counts.by_source.items())
        lines.append(f"- **{split}**: {counts.rows} rows; by kind: {kinds}; by source: {sources}")
    train = manifest.counts.get("train")
    sft = train.by_kind.get("sft", 0) if train else 0
    feedback = (train.rows if train else 0) - sft
    ratio = f" ({sft / feedback:.2f} : 1)" if feedback else ""
    versions = manifest.versions
    lines += ["", f"Ratio in train: instruction (`sft`) rows {sft} : feedback rows {feedback}{ratio}.", "",
              f"Seed {manifest.seed}; on_short `{manifest.on_short}`; content hash "
              f"`{manifest.content_hash}`; built with uft {versions.get('uft')} (pyarrow {versions.get('pyarrow')}, "
              f"polars {versions.get('polars')}).", "", READING, ""]
    return lines


def use_section(manifest: Manifest, repo_id: str | None) -> list[str]:
    name = manifest.name
    where = repo_id or f"path/to/{name}"
    lines = ["## Use", "", "```python", "import datasets", f"ds = datasets.load_dataset(\"{where}\")", "```", ""]
    if repo_id:
        lines += ["Train on it with `uft-train` (the uft toolkit): download the folder (the trainer checks "
                  "`manifest.json`), then point a recipe at it:", "", "```bash",
                  f"hf download {repo_id} --repo-type dataset --local-dir mixes/{name}",
                  f"uft-train RECIPE.yaml data.path=mixes/{name}", "```", ""]
    else:
        lines += ["Train on it with `uft-train RECIPE.yaml` (the recipe's `data.path` points at this folder).", ""]
    lines += ["Columns: `prompt` and `completion` (message lists), `score`, `kind`, `label`, `pair_id`, "
              "`source`, `source_id`, `group`, `turn`, `attributes`; `manifest.json` has the provenance.", ""]
    return lines
