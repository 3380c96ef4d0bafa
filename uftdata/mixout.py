"""Writing a mixture folder: shards, dataset card, and `manifest.json` last (docs/design.md).

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
from uftdata.atomic import atomic_path, check_output
from uftdata.card import render_card
from uftdata.errors import UftDataError
from uftdata.hub import is_hub_url
from uftdata.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    Accounting,
    HeldOutEntry,
    InputEntry,
    Manifest,
    Shard,
    SourceEntry,
    SplitCounts,
    ordered_splits,
)
from uftdata.mix import Plan, Selection, plan, select
from uftdata.mixspec import HeldOut, MixtureSpec
from uftdata.reader import InputFile
from uftdata.rejects import Rejects
from uftdata.writer import RowWriter

SHARD_ROWS = 100_000
BUCKET_ROWS = 10_000  # a divisor of SHARD_ROWS


def build_mixtures(spec: MixtureSpec, out: Path, rejects: Rejects,
                   progress: Callable[[str], None] | None = None, *, overwrite: bool = False) -> list[dict]:
    """Build the mixture (or, with a sweep, one mixture per take under `out`); returns manifests.

    All or nothing: every count is resolved before a byte is written, and a sweep's mixtures are
    built inside one hidden partial folder renamed to `out` when the last is complete. An existing
    `out` is replaced only with `overwrite`, and only when it is a mixture (a sweep: a folder of
    mixtures and nothing else); an output that is, holds or lies inside an input is refused."""
    sweep = [spec.with_take(t) for t in spec.sweep]
    owned = is_sweep_folder if sweep else is_mixture_folder
    fix = (f"It is an earlier {'sweep' if sweep else 'mixture'}: pass --overwrite to replace it, "
           "or choose another -o.")
    inputs = mixture_inputs(spec)
    check_mixture_output(out, inputs)
    check_output(out, overwrite=overwrite, owned=owned, inputs=inputs, fix=fix)  # before reading the inputs
    planned = plan(spec, rejects)
    chosen = [(s, select(planned, s)) for s in sweep or [spec]]
    with atomic_path(out, overwrite=overwrite, owned=owned, inputs=inputs, fix=fix) as tmp:
        if not sweep:
            return [write_mixture(planned, spec, chosen[0][1], tmp, out.name, progress)]
        tmp.mkdir()
        manifests = [write_mixture(planned, s, selected, tmp / s.name, s.name, progress) for s, selected in chosen]
    return manifests


def write_mixture(planned: Plan, spec: MixtureSpec, selected: Selection, folder: Path, name: str,
                  progress: Callable[[str], None] | None) -> dict:
    """Write one mixture into the new folder `folder` (inside build_mixtures' partial output)."""
    taken, repeats, splits = selected.taken, selected.repeats, selected.splits
    (folder / "data").mkdir(parents=True)
    files = []
    for split, rows in splits.items():
        files += write_shards(planned.parts, rows, folder, split, progress)
    manifest = build_manifest(planned, spec, name, splits, taken, repeats, files)
    (folder / "README.md").write_text(render_card(manifest), encoding="utf-8")
    # Written last: a folder with a manifest is a finished mixture.
    (folder / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    return manifest.to_dict()


def is_mixture_folder(path: Path) -> bool:
    """The marker `mix --overwrite` may replace: a folder holding `manifest.json`."""
    return path.is_dir() and not path.is_symlink() and (path / MANIFEST).is_file()


def is_sweep_folder(path: Path) -> bool:
    """A sweep's folder: mixtures only (a dead writer's hidden leftovers aside), at least one."""
    children = [c for c in path.iterdir() if not c.name.endswith((".partial", ".old", ".lock"))] if path.is_dir() else []
    return bool(children) and not path.is_symlink() and all(is_mixture_folder(c) for c in children)


def mixture_inputs(spec: MixtureSpec) -> list[Path]:
    """The local files and folders a mix reads (sources and test files), as given."""
    paths = [s.path for s in spec.sources] + [s.test.file for s in spec.sources if s.test and s.test.file]
    return [Path(p) for p in paths if not is_hub_url(p)]


def check_mixture_output(out: Path, inputs: list[Path]) -> None:
    """What atomic_path's rules leave to mix: a file at `out` is never a mixture (even with
    --overwrite), and a mixture inside an input folder would be read as rows of that source."""
    if out.is_file() or out.is_symlink():
        raise UftDataError(str(out), "is a file, not a mixture folder; refusing to replace it",
                           fix="Choose another -o (a new or mixture folder).")
    target = out.resolve()
    for folder in (p.resolve() for p in inputs if p.is_dir()):
        if folder in target.parents:
            raise UftDataError(str(out), f"lies inside the input folder {folder}; a later mix of that folder "
                               "would read the mixture's shards as its rows", fix="Choose an -o outside the inputs.")


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
                   taken: list[pl.DataFrame], repeats: list[int], files: list[dict]) -> Manifest:
    sources, dropped_total = [], Counter[str]()
    for i, state in enumerate(planned.sources):
        test_rows = int((splits["test"]["src"] == i).sum()) if "test" in splits else 0
        distinct = taken[i].filter(pl.col("copy") == 0).height
        dropped = Counter({k: v for k, v in state.dropped.items() if v})
        dropped["not_selected"] = state.candidates.height - distinct
        used = distinct + (0 if state.test_from_file else test_rows)
        assert state.records_in == used + sum(dropped.values()), f"accounting broke for {state.spec.path}"
        dropped_total.update(dropped)
        sources.append(SourceEntry(
            name=state.name,
            take=spec.sources[i].take.text,
            rows_train=taken[i].height,
            rows_test=test_rows,
            repeated_rows=repeats[i],
            test=_held_out(state.spec.test),
            accounting=Accounting(state.records_in, used, dict(sorted((k, v) for k, v in dropped.items() if v))),
            files=tuple(_input_entry(planned.parts[p]) for p in state.parts),
            test_files=tuple(_input_entry(planned.parts[p]) for p in sorted(set(state.test["part"].to_list()))
                             if p not in state.parts) if state.test_from_file else (),
        ))
    return Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        seed=spec.seed,
        on_short=spec.on_short,
        total=spec.total,
        sources=tuple(sources),
        counts=ordered_splits({split: split_counts(rows) for split, rows in splits.items()}),
        dropped=dict(sorted((k, v) for k, v in dropped_total.items() if v)),
        content_hash=content_hash(splits),
        files=tuple(Shard(f["path"], f["rows"], f["bytes"], f["sha256"]) for f in files),
        versions={"uft": __version__, "pyarrow": pa.__version__, "polars": pl.__version__,
                  "python": platform.python_version()},
    )


def _held_out(test: HeldOut | None) -> HeldOutEntry | None:
    """The test split as the manifest records it: a local file by its name only (the manifest is
    published; the user's directories are not), a Hub file by its URL."""
    if test is None:
        return None
    if test.file is not None:
        return HeldOutEntry(file=test.file if is_hub_url(test.file) else Path(test.file).name)
    return HeldOutEntry(fraction=test.fraction)


def _input_entry(f: InputFile) -> InputEntry:
    metadata = f.parquet().metadata
    # A Hub file is pinned by its URL and commit rather than hashed: hashing would download it whole.
    # A local one by its name and sha256: where it lay on the user's disk is not recorded.
    pinned = f.provenance() or {"sha256": sha256_file(f.path)}
    return InputEntry(name=f.name, rows=metadata.num_rows, **pinned, upstream=_upstream(metadata) or None)


def split_counts(rows: pl.DataFrame) -> SplitCounts:
    """Rows, and rows by `source` and by `kind`, of one split (`rows` needs those two columns)."""
    return SplitCounts(
        rows=rows.height,
        by_source=dict(sorted(rows.group_by("source").len().iter_rows())),
        by_kind=dict(sorted(rows.group_by("kind").len().iter_rows())),
    )
