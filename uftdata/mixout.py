"""Writing a mixture folder: shards, dataset card, and `manifest.json` last (DESIGN.md).

The folder is built under a temporary sibling name and renamed into place when complete, so a
mixture folder with a manifest is always whole.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from uftdata import __version__, schema
from uftdata.atomic import atomic_path
from uftdata.card import render_card
from uftdata.errors import UftDataError
from uftdata.mix import Plan, final_order, plan, resolve_counts, take
from uftdata.mixspec import MixtureSpec
from uftdata.reader import InputFile
from uftdata.rejects import Rejects
from uftdata.writer import RowWriter

SHARD_ROWS = 100_000
BUCKET_ROWS = 10_000  # a divisor of SHARD_ROWS
MANIFEST = "manifest.json"


def build_mixtures(spec: MixtureSpec, out: Path, rejects: Rejects,
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Build the mixture (or, with a sweep, one mixture per take under `out`); returns manifests."""
    planned = plan(spec, rejects)
    if not spec.sweep:
        return [write_mixture(planned, spec, out, progress)]
    return [write_mixture(planned, spec.with_take(t), out / spec.with_take(t).name, progress) for t in spec.sweep]


def write_mixture(planned: Plan, spec: MixtureSpec, out: Path, progress: Callable[[str], None] | None) -> dict:
    counts = resolve_counts(spec, planned.sources)
    taken, repeats = [], []
    for i, (state, count) in enumerate(zip(planned.sources, counts)):
        rows, repeated = take(state, count, spec.on_short)
        taken.append(rows.with_columns(src=pl.lit(i, dtype=pl.Int32)))
        repeats.append(repeated)
    train = final_order(pl.concat(taken), spec.seed)
    tests = [s.test.with_columns(src=pl.lit(i, dtype=pl.Int32), copy=pl.lit(0, dtype=pl.Int32))
             for i, s in enumerate(planned.sources) if s.test.height]
    splits = {"train": train}
    if tests:
        splits["test"] = final_order(pl.concat(tests), spec.seed)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise UftDataError(str(out), "exists and is not a mixture folder; refusing to replace it",
                           fix="Choose a new --out, or remove it yourself.")
    with atomic_path(out) as tmp:
        (tmp / "data").mkdir(parents=True)
        files = []
        for split, rows in splits.items():
            files += write_shards(planned.parts, rows, tmp, split, progress)
        manifest = build_manifest(planned, spec, out.name, splits, taken, repeats, files)
        (tmp / "README.md").write_text(render_card(manifest), encoding="utf-8")
        # Written last: a folder with a manifest is a finished mixture.
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def write_shards(parts: list[InputFile], rows: pl.DataFrame, folder: Path, split: str,
                 progress: Callable[[str], None] | None) -> list[dict]:
    """The split's rows, in the order of `rows`, as shards of at most SHARD_ROWS rows."""
    n_shards = max(1, -(-rows.height // SHARD_ROWS))
    spill = folder / f".spill-{split}"
    spill.mkdir()
    positions = spill_rows(parts, rows, spill)
    files = []
    for k in range(n_shards):
        name = f"data/{split}-{k:05d}-of-{n_shards:05d}.parquet"
        if progress:
            progress(name)
        writer = RowWriter(folder / name)
        first = k * SHARD_ROWS // BUCKET_ROWS
        for bucket in range(first, min(first + SHARD_ROWS // BUCKET_ROWS, len(positions))):
            with pa.OSFile(str(spill / f"{bucket}.arrow")) as source:
                table = pa.ipc.open_file(source).read_all()
            writer.write(table.take(pa.array(np.argsort(positions[bucket], kind="stable"))))
            (spill / f"{bucket}.arrow").unlink()
        writer.close()
        files.append({"path": name, "rows": writer.rows, "bytes": (folder / name).stat().st_size,
                      "sha256": sha256_file(folder / name)})
    spill.rmdir()
    return files


def spill_rows(parts: list[InputFile], rows: pl.DataFrame, spill: Path) -> list[np.ndarray]:
    """Copy the rows at (`part`, `row`) into Arrow files of BUCKET_ROWS consecutive output
    positions each, reading every row group that holds any of them once; return each bucket's
    positions (in `rows`) in file order.

    Rows are drawn at random across the sources, so every shard needs nearly every row group:
    reading each once and spilling keeps memory at one row group plus one bucket, where gathering
    per shard would decode every source once per shard."""
    located = rows.select("part", "row").with_row_index("pos").with_columns(bucket=pl.col("pos") // BUCKET_ROWS)
    n_buckets = max(1, -(-rows.height // BUCKET_ROWS))
    writers = [pa.ipc.new_file(str(spill / f"{b}.arrow"), schema.SCHEMA) for b in range(n_buckets)]
    positions: list[list[np.ndarray]] = [[] for _ in range(n_buckets)]
    for (part,), wanted in located.sort("part", "row").group_by("part", maintain_order=True):
        file = parts[part].parquet()
        starts = np.cumsum([0] + [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)])
        at, pos, bucket = (wanted[c].to_numpy() for c in ("row", "pos", "bucket"))
        groups = np.searchsorted(starts, at, side="right") - 1
        for g in np.unique(groups):
            in_group = groups == g
            table = file.read_row_group(int(g), columns=list(schema.COLUMNS)).cast(schema.SCHEMA)
            local, where, to = at[in_group] - starts[g], pos[in_group], bucket[in_group]
            for b in np.unique(to):
                mine = to == b
                writers[b].write_table(table.take(pa.array(local[mine])))
                positions[b].append(where[mine])
    for writer in writers:
        writer.close()
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in positions]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(splits: dict[str, pl.DataFrame]) -> str:
    """sha256 over the ordered (split, id, kind, score, label, pair_id) of all rows, one line each:
    fields joined by \\x1f, score as the decimal of its float32 bits, label 1/0/empty, pair_id or
    empty. Built from values, not file bytes, so it is the same across library versions."""
    digest = hashlib.sha256()
    for split, rows in splits.items():
        bits = pl.Series(rows["score"].cast(pl.Float32).to_numpy().view(np.uint32)).cast(pl.String)
        lines = rows.select(pl.concat_str(
            pl.lit(split), "id", "kind", bits.alias("bits"),
            pl.col("label").cast(pl.Int8).cast(pl.String).fill_null(""), pl.col("pair_id").fill_null(""),
            separator="\x1f",
        ))
        digest.update(("\n".join(lines.to_series().to_list()) + "\n").encode("utf-8") if rows.height else b"")
    return digest.hexdigest()


def _upstream(metadata: pq.FileMetaData) -> dict | None:
    raw = (metadata.metadata or {}).get(b"uft.summary")
    return json.loads(raw) if raw else None


def build_manifest(planned: Plan, spec: MixtureSpec, name: str, splits: dict[str, pl.DataFrame],
                   taken: list[pl.DataFrame], repeats: list[int], files: list[dict]) -> dict:
    sources, dropped_total = [], Counter[str]()
    for i, state in enumerate(planned.sources):
        test_rows = int((splits["test"]["src"] == i).sum()) if "test" in splits else 0
        distinct = taken[i].filter(pl.col("copy") == 0).height
        dropped = Counter({k: v for k, v in state.dropped.items() if v})
        dropped["not_selected"] = state.candidates.height - distinct
        used = distinct + (0 if state.test_from_file else test_rows)
        assert state.records_in == used + sum(dropped.values()), f"accounting broke for {state.spec.path}"
        dropped_total.update(dropped)
        sources.append({
            "name": state.name,
            "take": spec.sources[i].take.text,
            "rows_train": taken[i].height,
            "rows_test": test_rows,
            "repeated_rows": repeats[i],
            "test": None if state.spec.test is None else {k: v for k, v in vars(state.spec.test).items() if v is not None},
            "accounting": {"records_in": state.records_in, "records_used": used,
                           "dropped": dict(sorted((k, v) for k, v in dropped.items() if v))},
            "files": [_input_entry(planned.parts[p]) for p in state.parts],
            "test_files": [_input_entry(planned.parts[p]) for p in sorted(set(state.test["part"].to_list()))
                           if p not in state.parts] if state.test_from_file else [],
        })
    return {
        "uft_mixture_version": 1,
        "name": name,
        "seed": spec.seed,
        "on_short": spec.on_short,
        "total": spec.total,
        "sources": sources,
        "counts": {split: _counts(rows) for split, rows in splits.items()},
        "dropped": dict(sorted((k, v) for k, v in dropped_total.items() if v)),
        "content_hash": content_hash(splits),
        "files": files,
        "versions": {"uft": __version__, "pyarrow": pa.__version__, "polars": pl.__version__,
                     "python": platform.python_version()},
    }


def _input_entry(f: InputFile) -> dict:
    metadata = f.parquet().metadata
    # A Hub file is pinned by its URL and commit rather than hashed: hashing would download it whole.
    pinned = f.provenance() or {"sha256": sha256_file(f.path)}
    entry = {"name": f.name, **pinned, "rows": metadata.num_rows}
    upstream = _upstream(metadata)
    if upstream:
        entry["upstream"] = upstream
    return entry


def _counts(rows: pl.DataFrame) -> dict:
    return {
        "rows": rows.height,
        "by_source": dict(sorted(rows.group_by("source").len().iter_rows())),
        "by_kind": dict(sorted(rows.group_by("kind").len().iter_rows())),
    }
