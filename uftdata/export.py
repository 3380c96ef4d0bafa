"""`uftdata export`: a mixture folder in the layouts TRL and LLaMA-Factory read.

Targets; every one keeps the mixture's rank order and counts each row it leaves out under a reason:
  trl-sft       `sft` rows only (docs/design.md): prompt, completion (TRL's conversational prompt-completion)
  trl-dpo       pairwise rows re-joined by pair_id (label true = chosen): prompt, chosen, rejected,
                score_chosen, score_rejected (TRL's conversational preference layout)
  trl-kto       every row: prompt, completion, label = score >= threshold (TRL's unpaired preference)
  llamafactory  the three stages above as LLaMA-Factory sharegpt files with OpenAI role/content tags,
                `{name}_{stage}[_test].jsonl`, registered in `dataset_info.json`
TRL targets write `data/{split}-00000-of-00001.parquet` and a README.md whose YAML `configs` lets
`datasets.load_dataset(OUT)` find the splits. All write `export.json` (source, counts, drops) last.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from uftdata import __version__, schema
from uftdata.atomic import atomic_path
from uftdata.errors import UftDataError
from uftdata.manifest import Manifest
from uftdata.mixout import sha256_file
from uftdata.verify import check_mixture
from uftdata.writer import COMPRESSION, COMPRESSION_LEVEL, ROW_GROUP_ROWS

Target = Literal["trl-sft", "trl-dpo", "trl-kto", "llamafactory"]
Stage = Literal["sft", "dpo", "kto"]
TARGETS: Final[tuple[str, ...]] = get_args(Target)
STAGES: Final[tuple[str, ...]] = get_args(Stage)
EXPORT_FILE = "export.json"
SPLITS = ("train", "test")

_MESSAGES = pa.list_(schema.MESSAGE)
TRL_SCHEMAS: Final[dict[str, pa.Schema]] = {
    "sft": pa.schema([("prompt", _MESSAGES), ("completion", _MESSAGES)]),
    "dpo": pa.schema([("prompt", _MESSAGES), ("chosen", _MESSAGES), ("rejected", _MESSAGES),
                      ("score_chosen", pa.float32()), ("score_rejected", pa.float32())]),
    "kto": pa.schema([("prompt", _MESSAGES), ("completion", _MESSAGES), ("label", pa.bool_())]),
}
# LLaMA-Factory's data/README.md, "OpenAI Format": sharegpt formatting with role/content tags.
LF_TAGS: Final = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                  "assistant_tag": "assistant", "system_tag": "system"}
LF_COLUMNS: Final[dict[str, dict[str, str]]] = {
    "sft": {"messages": "messages"},
    "dpo": {"messages": "messages", "chosen": "chosen", "rejected": "rejected"},
    "kto": {"messages": "messages", "kto_tag": "label"},
}
STAGE_KINDS: Final[dict[str, tuple[str, ...]]] = {"sft": ("sft",), "dpo": ("pairwise",), "kto": schema.KINDS}
_NEEDS: Final = {"sft": "sft rows", "dpo": "pairwise rows", "kto": "rows of any kind"}
_READ = ("prompt", "completion", "score", "kind", "label", "pair_id")


@dataclass
class Examples:
    """One stage's examples from one split, in rank order, and what became of the split's rows."""

    frame: pl.DataFrame
    rows_in: int
    dropped: Counter[str]
    labels: dict[str, int] | None = None


def export_mixture(mixture: Path, to: str, out: Path, *, kto_threshold: float = 0.5,
                   overwrite: bool = False) -> dict:
    """Write the mixture folder `mixture` as target `to` into the folder `out`; returns export.json's dict."""
    if to not in TARGETS:
        raise UftDataError("--to", "unknown target", got=to, expected=", ".join(TARGETS))
    if not 0.0 <= kto_threshold <= 1.0:
        raise UftDataError("--kto-threshold", "is outside the score range", got=kto_threshold, expected="0 <= T <= 1")
    mixture, out = Path(mixture), Path(out)
    manifest = check_mixture(mixture)
    _check_out(out, overwrite)
    read = {s: _read_split(mixture, manifest, s) for s in SPLITS}
    splits = {s: rows for s, rows in read.items() if rows is not None}
    stages = STAGES if to == "llamafactory" else (to.removeprefix("trl-"),)
    outputs = []
    with atomic_path(out, overwrite=overwrite, owned=is_export, inputs=[mixture]) as tmp:
        tmp.mkdir()
        for stage in stages:
            for split, rows in splits.items():
                examples = stage_examples(stage, rows, threshold=kto_threshold, where=f"{mixture}: {split}",
                                          lf=to == "llamafactory")
                path = _write(tmp, to, manifest.name, stage, split, examples.frame)
                outputs.append(_output_entry(tmp, path, stage, split, examples))
        if to != "llamafactory" and not outputs[0]["examples"]:
            raise UftDataError(str(mixture), f"has no training rows for {to}",
                               got=manifest.counts["train"].by_kind, expected=_NEEDS[stages[0]],
                               fix="Export another target, or mix rows of that kind in.")
        summary = {
            "uft_export_version": 1, "target": to,
            "source": {"name": manifest.name, "content_hash": manifest.content_hash},
            "kto_threshold": kto_threshold if "kto" in stages else None,
            "outputs": outputs,
            "versions": {"uft": __version__, "pyarrow": pa.__version__, "polars": pl.__version__},
        }
        (_write_dataset_info if to == "llamafactory" else _write_card)(tmp, summary)
        # Written last: a folder with export.json is a finished export.
        (tmp / EXPORT_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def format_export(mixture: Path, out: Path, summary: dict) -> str:
    """What `uftdata export` prints: source and threshold, then per stage and split the examples
    written (kto: the labels) and each reason rows were left out."""
    source = summary["source"]
    lines = [f"export: {mixture} -> {out} ({summary['target']}); source {source['name']}, "
             f"content_hash {source['content_hash'][:16]}"]
    if summary["kto_threshold"] is not None:
        lines.append(f"  kto_threshold: {summary['kto_threshold']} (label = score >= threshold)")
    for o in summary["outputs"]:
        labels = o.get("labels")
        counts = (f"; label true {labels['true']}, false {labels['false']}, "
                  f"label_changed_by_threshold {labels['label_changed_by_threshold']}") if labels else ""
        lines.append(f"  {o['stage']} {o['split']}: {o['examples']} examples from {o['rows_in']} rows -> "
                     f"{o['path'] or 'nothing written'}{counts}")
        lines += [f"    dropped.{reason}: {n}" for reason, n in o["dropped"].items()]
    return "\n".join(lines)


def is_export(folder: Path) -> bool:
    """A folder `uftdata export` wrote: export.json, written last, is there."""
    return (folder / EXPORT_FILE).is_file()


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not overwrite:
        raise UftDataError(str(out), "already exists", fix="Pass --overwrite to replace it, or choose another -o.")
    if not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_FILE).is_file()):
        raise UftDataError(str(out), "exists and is not an export folder; refusing to replace it",
                           fix="Choose a new -o, or remove it yourself.")


def _read_split(mixture: Path, manifest: Manifest, split: str) -> pl.DataFrame | None:
    """The split's rows (only the columns exports use) in rank order, with their position as `rank`."""
    shards = manifest.shards(split)
    if not shards:
        return None
    return pl.scan_parquet([mixture / s.path for s in shards]).select(_READ).with_row_index("rank").collect()


def stage_examples(stage: str, rows: pl.DataFrame, *, threshold: float, where: str, lf: bool = False) -> Examples:
    """`rows` (a split, with `rank`) as `stage` examples. `lf`: LLaMA-Factory also needs each prompt to
    alternate user/assistant after an optional leading system message; other rows are dropped."""
    kinds = STAGE_KINDS[stage]
    used = rows.filter(pl.col("kind").is_in(kinds))
    other = rows.filter(~pl.col("kind").is_in(kinds)).group_by("kind").len().sort("kind")
    dropped = Counter({f"not_{kinds[0]}_kind:{kind}": n for kind, n in other.iter_rows()})
    if lf:
        alternates = _alternates(pl.col("prompt"))
        dropped["roles_not_alternating"] = used.filter(~alternates).height
        used = used.filter(alternates)
    labels = None
    if stage == "sft":
        frame = used.select("rank", "prompt", "completion")
    elif stage == "dpo":
        frame = join_pairs(used, where)
    else:
        frame, labels = label_by_threshold(used, threshold)
    return Examples(frame, rows.height, Counter({k: n for k, n in sorted(dropped.items()) if n}), labels)


def join_pairs(rows: pl.DataFrame, where: str) -> pl.DataFrame:
    """Pairwise rows as one example per pair_id (label true = chosen), at the rank of its first row."""
    for pair_id, problem in schema.pair_problems(rows.select("pair_id", "label")).iter_rows():
        raise UftDataError(f"{where}: pair_id {pair_id}", f"is not a whole pair: {problem}",
                           fix="Rebuild the mixture with `uftdata mix`; it keeps both rows of a pair.")
    chosen = rows.filter(pl.col("label")).select("rank", "pair_id", "prompt", chosen="completion", score_chosen="score")
    rejected = rows.filter(~pl.col("label")).select("pair_id", rejected_rank="rank", rejected_prompt="prompt",
                                                    rejected="completion", score_rejected="score")
    pairs = chosen.join(rejected, on="pair_id", validate="1:1")
    for (pair_id,) in pairs.filter(pl.col("prompt") != pl.col("rejected_prompt")).select("pair_id").iter_rows():
        raise UftDataError(f"{where}: pair_id {pair_id}", "chosen and rejected rows have different prompts",
                           expected="one prompt per pair", fix="Rebuild the pairs with `uftdata feedback`.")
    return pairs.select(pl.min_horizontal("rank", "rejected_rank").alias("rank"), "prompt", "chosen", "rejected",
                        "score_chosen", "score_rejected").sort("rank")


def label_by_threshold(rows: pl.DataFrame, threshold: float) -> tuple[pl.DataFrame, dict[str, int]]:
    """KTO examples, label = score >= threshold, and counts of labels and of feedback labels it changed."""
    # Compared in float32, the scores' type: the score stored for 0.7 is float32(0.7) < 0.7 in float64.
    label = pl.col("score") >= pl.lit(threshold, dtype=pl.Float32)
    frame = rows.select("rank", "prompt", "completion", label=label, given=pl.col("label"))
    changed = frame.filter(pl.col("given").is_not_null() & (pl.col("given") != pl.col("label"))).height
    true = int(frame["label"].sum())
    return frame.drop("given"), {"true": true, "false": frame.height - true, "label_changed_by_threshold": changed}


def _alternates(prompt: pl.Expr) -> pl.Expr:
    """user, assistant, user, ... after an optional leading system message."""
    roles = prompt.list.eval(pl.element().struct.field("role"))
    body = roles.list.slice((roles.list.first() == "system").cast(pl.Int64))
    expected = pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
    return body.list.eval(pl.element() == expected).list.all()


def _write(folder: Path, to: str, name: str, stage: str, split: str, frame: pl.DataFrame) -> str | None:
    """Write one stage's split; returns its path relative to `folder` (None: no examples, no file)."""
    if not frame.height:
        return None
    frame = frame.drop("rank")
    if to != "llamafactory":
        path = f"data/{split}-00000-of-00001.parquet"
        (folder / "data").mkdir(exist_ok=True)
        table = frame.to_arrow().cast(TRL_SCHEMAS[stage])
        pq.write_table(table, folder / path, row_group_size=ROW_GROUP_ROWS, compression=COMPRESSION,
                       compression_level=COMPRESSION_LEVEL)
        return path
    path = f"{_lf_name(name, stage, split)}.jsonl"
    frame.select(_lf_columns(stage)).write_ndjson(folder / path)
    return path


def _lf_columns(stage: str) -> list[pl.Expr]:
    """LLaMA-Factory's sharegpt columns of a `stage` (messages, plus chosen/rejected or label)."""
    if stage == "sft":
        return [pl.concat_list("prompt", "completion").alias("messages")]
    if stage == "dpo":
        return [pl.col("prompt").alias("messages"), pl.col("chosen").list.first(), pl.col("rejected").list.first()]
    return [pl.concat_list("prompt", "completion").alias("messages"), pl.col("label")]


def _lf_name(name: str, stage: str, split: str) -> str:
    return f"{name}_{stage}" + ("" if split == "train" else f"_{split}")


def _output_entry(folder: Path, path: str | None, stage: str, split: str, examples: Examples) -> dict:
    entry = {"stage": stage, "split": split, "path": path, "examples": examples.frame.height,
             "rows_in": examples.rows_in, "dropped": dict(examples.dropped),
             "sha256": sha256_file(folder / path) if path else None}
    if examples.labels is not None:
        entry["labels"] = examples.labels
    return entry


def _write_dataset_info(folder: Path, summary: dict) -> None:
    """LLaMA-Factory's registry: one entry per file, named as the file without .jsonl."""
    info = {}
    for o in summary["outputs"]:
        if o["path"]:
            info[Path(o["path"]).stem] = {"file_name": o["path"], "formatting": "sharegpt",
                                          **({"ranking": True} if o["stage"] == "dpo" else {}),
                                          "columns": LF_COLUMNS[o["stage"]], "tags": LF_TAGS}
    (folder / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _write_card(folder: Path, summary: dict) -> None:
    """TRL targets: a README.md whose YAML `configs` lets `datasets.load_dataset(OUT)` find the splits."""
    written = [o for o in summary["outputs"] if o["path"]]
    source = summary["source"]
    threshold = f", kto_threshold {summary['kto_threshold']}" if summary["kto_threshold"] is not None else ""
    header = {
        "configs": [{"config_name": "default",
                     "data_files": [{"split": o["split"], "path": o["path"]} for o in written]}],
        "dataset_info": {
            "config_name": "default",
            # `datasets` keys its cache of a local folder by this YAML, not by the files (see card.py): the
            # description names everything the rows depend on, so a re-export in place never loads stale
            # rows (a new threshold changes labels, not counts); num_examples is verified on load.
            "description": f"uftdata export --to {summary['target']}{threshold} of the uft mixture "
                           f"{source['name']} (content hash {source['content_hash']}), uft {__version__}",
            "splits": [{"name": o["split"], "num_examples": o["examples"], "num_bytes": _arrow_bytes(folder / o["path"])}
                       for o in written],
        },
        "tags": ["uft", "trl", summary["target"]],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
             f"# {source['name']} ({summary['target']})", "",
             f"The uft mixture `{source['name']}` (content hash `{source['content_hash']}`) exported by "
             f"`uftdata export --to {summary['target']}` for TRL. `export.json` lists the rows left out and why.", "",
             "```python", "import datasets", 'ds = datasets.load_dataset("path/to/this/folder")',
             "```", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _arrow_bytes(path: Path) -> int:
    """Uncompressed size of a Parquet file's data: the split's `num_bytes` in the card."""
    metadata = pq.read_metadata(path)
    return sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
