"""The typed manifest and the check of a mixture against it (issue "Trust", item 2).

Every tampered mixture below is a copy of the session's demo mixture (conftest.py `mixture`; never
modified itself): `uft-train` must stop with exit 2 and one line naming the file and what differs,
before any model is built and without making its run folder; `uftdata export` and `publish
--dry-run` refuse the same mixtures. A plain Parquet file as `data.path` is validated row by row.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml
from corpus import assert_one_line, leftovers, snapshot, uft_train, uftdata
from test_mix import build, sft_rows, spec, src, write

from uft_train import data as train_data
from uft_train.data import read_split, verify_data
from uftdata import verify
from uftdata.errors import UftDataError
from uftdata.manifest import MANIFEST, read_manifest
from uftdata.mixout import content_hash, sha256_file
from uftdata.mixspec import HeldOut
from uftdata.verify import check_mixture, first_out_of_order, mixture_problems
from uftdata.writer import RowWriter

TRAIN = "data/train-00000-of-00001.parquet"
TEST = "data/test-00000-of-00001.parquet"
RECIPE = {
    "model": {"name": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}},
    "lora": {"r": 4, "alpha": 8, "targets": ["q_proj", "v_proj"]},
    "data": {"path": "mix", "max_length": 512, "max_prompt_length": 384},
    "loss": {"name": "una_mse", "beta": 0.1},
    "train": {"max_steps": 1, "batch_size": 4, "micro_batch_size": 4, "device": "cpu"},
    "output": {"dir": "run"},
}


@pytest.fixture()
def work(mixture: Path, tmp_path: Path) -> Path:
    """A folder holding `mix/`, a copy of the demo mixture, and `r.yaml`, a recipe training on it."""
    shutil.copytree(mixture, tmp_path / "mix")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(RECIPE), encoding="utf-8")
    return tmp_path


def edit_manifest(folder: Path, change: Callable[[dict], object]) -> None:
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    change(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def rewrite(path: Path, rows: pl.DataFrame) -> None:
    writer = RowWriter(path)
    writer.write(rows)
    writer.close()


def refused(work: Path, *parts: str) -> str:
    """`uft-train r.yaml` on the tampered copy: exit 2, one line holding `parts`, nothing written."""
    before = snapshot(work)
    line = assert_one_line(*uft_train(["r.yaml"], work), *parts, prog="uft-train")
    assert snapshot(work) == before and not (work / "run").exists() and leftovers(work) == []
    return line


# --- uft-train refuses a mixture that is not what its manifest says ---------------------------------

def test_corpus_shard_edited_after_mixing(work: Path) -> None:
    rows = pl.read_parquet(work / "mix" / TRAIN)
    rewrite(work / "mix" / TRAIN, rows.with_columns(score=pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(0.5))
                                                    .otherwise("score").cast(pl.Float32)))
    assert pl.read_parquet(work / "mix" / TRAIN).height == rows.height  # same rows, one score changed
    refused(work, f"mix/{TRAIN}: sha256 differs from manifest.json (modified after mixing)",
            "Rebuild the mixture with `uftdata mix`")


def test_corpus_shard_edited_and_its_sha256_updated(work: Path) -> None:
    """A careful edit: the shard's sha256 and size put into the manifest too. The content hash of
    the rows is what catches it."""
    rows = pl.read_parquet(work / "mix" / TRAIN)
    rewrite(work / "mix" / TRAIN, rows.with_columns(score=pl.when(pl.int_range(pl.len()) == 3).then(pl.lit(0.5))
                                                    .otherwise("score").cast(pl.Float32)))
    edit_manifest(work / "mix", lambda m: m["files"][0].update(sha256=sha256_file(work / "mix" / TRAIN),
                                                               bytes=(work / "mix" / TRAIN).stat().st_size))
    refused(work, "mix/manifest.json: content_hash does not match the rows of the shards (they hash to")


def test_corpus_extra_unlisted_shard(work: Path) -> None:
    shutil.copy(work / "mix" / TRAIN, work / "mix/data/train-00001-of-00002.parquet")
    refused(work, "mix/data/train-00001-of-00002.parquet: not listed in manifest.json (added after mixing)")


def test_corpus_missing_shard(work: Path) -> None:
    (work / "mix" / TEST).unlink()
    refused(work, f"mix/{TEST}: listed in manifest.json but missing")


def test_corpus_hand_edited_count(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["counts"]["train"]["by_kind"].update(sft=m["counts"]["train"]["by_kind"]["sft"] + 1))
    refused(work, "mix/manifest.json: counts.train.by_kind.sft is 64; the shards hold 63")


def test_corpus_hand_edited_shard_row_count(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["files"][0].update(rows=128))
    refused(work, f"mix/manifest.json: files[0].rows is 128; {TRAIN} holds 129 rows")


def test_corpus_changed_seed(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m.update(seed=1))
    line = refused(work, "mix/manifest.json: seed 1 does not give the train split's row order (row 0, id ")
    assert "(1 more problem(s); `uftdata inspect mix` lists all)" in line  # the test split's order too


def test_corpus_content_hash_that_lies(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m.update(content_hash="0" * 64))
    refused(work, "mix/manifest.json: content_hash does not match the rows of the shards")


def test_corpus_manifest_not_json(work: Path) -> None:
    (work / "mix" / MANIFEST).write_text('{"uft_mixture_version": 2, "name": ', encoding="utf-8")
    refused(work, "mix/manifest.json: is not valid JSON (line 1, column 36", "Rebuild the mixture with `uftdata mix`")


def test_corpus_manifest_field_of_the_wrong_type(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["files"][1].update(sha256=12))
    refused(work, "mix/manifest.json: field 'files[1].sha256' is not a sha256 (64 lowercase hex characters) (got 12)")


def test_corpus_manifest_field_missing(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["sources"][2].pop("accounting"))
    refused(work, "mix/manifest.json: field 'sources[2].accounting' is missing")


def test_corpus_truncated_shard(work: Path) -> None:
    shard = work / "mix" / TRAIN
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    refused(work, f"mix/{TRAIN}: sha256 differs from manifest.json (modified after mixing)")


def test_corpus_garbage_shard(work: Path) -> None:
    shard = work / "mix" / TEST
    shard.write_bytes(b"\x00garbage" * (shard.stat().st_size // 8))
    refused(work, f"mix/{TEST}: sha256 differs from manifest.json (modified after mixing)")


def test_corpus_shard_path_outside_the_mixture(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["files"][0].update(path="../r.yaml"))
    refused(work, "mix/manifest.json: field 'files[0].path' is not a shard path (got '../r.yaml'); expected "
                  "data/SPLIT-NNNNN-of-NNNNN.parquet")


# --- export and publish refuse what they would otherwise stamp ----------------------------------------

def test_corpus_export_refuses_a_hand_edited_seed(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m.update(seed=7))
    before = snapshot(work)
    assert_one_line(*uftdata(["export", "mix", "--to", "trl-sft", "-o", "out"], work),
                    "mix/manifest.json: seed 7 does not give the train split's row order")
    assert snapshot(work) == before and not (work / "out").exists() and leftovers(work) == []


def test_corpus_publish_dry_run_refuses_a_hand_edited_count(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m["sources"][0].update(rows_train=1000))
    before = snapshot(work)
    assert_one_line(*uftdata(["publish", "mix", "--repo", "org/mix", "--dry-run"], work),
                    "mix/manifest.json: sources[].rows_train sum to 1066; counts.train.rows is 129")
    assert snapshot(work) == before and leftovers(work) == []


def test_mixture_problems_lists_every_difference(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: (m.update(seed=1), m["counts"]["test"].update(rows=17)))
    assert mixture_problems(work / "mix") == [
        "manifest.json: counts.test.rows is 17; the shards hold 16",
        "manifest.json: sources[].rows_test sum to 16; counts.test.rows is 17",
        "manifest.json: seed 1 does not give the train split's row order (row 0, id 8217fd0b0e13f45c7904458cc805c3ea, "
        "is out of place)",
        "manifest.json: seed 1 does not give the test split's row order (row 0, id 75fb740743ecc55fdd1c4759d46e6381, "
        "is out of place)",
    ]


# --- a plain Parquet file as data.path ---------------------------------------------------------------

def test_corpus_plain_parquet_with_a_bad_row(work: Path) -> None:
    rows = pl.read_parquet(work / "mix" / TRAIN)
    rewrite(work / "rows.parquet", rows.with_columns(score=pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(1.5))
                                                     .otherwise("score").cast(pl.Float32)))
    before = snapshot(work)
    assert_one_line(*uft_train(["r.yaml", "data.path=rows.parquet"], work),
                    f"rows.parquet: row 5 (id {rows['id'][5]}): field 'score': is null, NaN or outside [0, 1]",
                    "uftdata inspect",
                    prog="uft-train")
    assert snapshot(work) == before and not (work / "run").exists()


def test_corpus_plain_parquet_with_a_broken_pair(work: Path) -> None:
    rows = pl.read_parquet(work / "mix" / TRAIN).with_row_index("at")
    lone = rows.filter(pl.col("kind") == "pairwise")["at"][0]  # its partner stays, alone
    rewrite(work / "rows.parquet", rows.filter(pl.col("at") != lone).drop("at"))
    partner = rows.filter(pl.col("pair_id") == rows["pair_id"][lone], pl.col("at") != lone)
    row = int(partner["at"][0]) - (partner["at"][0] > lone)
    assert_one_line(*uft_train(["r.yaml", "data.path=rows.parquet"], work),
                    f"rows.parquet: row {row}: field 'pair_id': {partner['pair_id'][0]} has 1 rows", prog="uft-train")


def test_corpus_plain_parquet_that_is_not_parquet(work: Path) -> None:
    (work / "rows.parquet").write_bytes(b"PAR1 but not really")
    assert_one_line(*uft_train(["r.yaml", "data.path=rows.parquet"], work),
                    "rows.parquet: cannot be read as Parquet", prog="uft-train")


def test_plain_parquet_is_validated_and_noted_once(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(work / "mix" / TRAIN, work / "rows.parquet")
    assert read_split(work / "rows.parquet", "train").height == 129
    assert read_split(work / "rows.parquet", "test") is None
    out = capsys.readouterr().out
    assert out == (f"uft-train: note: {work / 'rows.parquet'} is a plain Parquet file, not a verified mixture "
                   "(no manifest.json, no content hash): its rows were validated, not checked against a build.\n")


# --- verified once per run; the seed check; the manifest format -------------------------------------

def test_a_mixture_is_hashed_once_per_run_and_again_when_it_changes(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[str] = []
    monkeypatch.setattr(verify, "sha256_file", lambda path: hashed.append(Path(path).name) or sha256_file(path))
    assert read_split(work / "mix", "train").height == 129 and read_split(work / "mix", "test").height == 16
    assert sorted(hashed) == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert verify_data(work / "mix") is verify_data(work / "mix")  # no third hash
    assert len(hashed) == 2
    (work / "mix" / TEST).write_bytes((work / "mix" / TEST).read_bytes()[:-1])  # a change after the check
    with pytest.raises(UftDataError, match="test-00000-of-00001.parquet: sha256 differs"):
        read_split(work / "mix", "test")
    assert train_data._verified  # noqa: SLF001 - the memo is what makes "once" true


def test_order_check_follows_final_order_with_repeated_copies(tmp_path: Path) -> None:
    """On a mixture with repeats (a source of 30 rows taken 70 times), the rows are in the order of
    their seed and of no other, and a swap of two rows is found at its first position."""
    a = write(tmp_path / "a.parquet", sft_rows(30, "a"), "a")
    manifest = build(spec(src(a, "70"), seed=3, on_short="repeat"), tmp_path / "m")
    assert manifest["sources"][0]["repeated_rows"] == 40 and mixture_problems(tmp_path / "m") == []
    rows = pl.read_parquet(tmp_path / "m" / TRAIN)
    assert first_out_of_order(rows, 3, repeats=True) is None
    assert first_out_of_order(rows, 4, repeats=True) == 0
    swapped = pl.concat([rows.head(10), rows.slice(11, 1), rows.slice(10, 1), rows.slice(12)])
    assert first_out_of_order(swapped, 3, repeats=True) == 10


def test_manifest_has_no_local_paths_and_the_same_bytes_every_time(tmp_path: Path) -> None:
    a = write(tmp_path / "inputs" / "a.parquet", sft_rows(40, "a"), "a")
    held = write(tmp_path / "inputs" / "held.parquet", sft_rows(5, "h"), "a")
    for out in ("m1", "m2"):
        build(spec(src(a.resolve(), "all", HeldOut(file=str(held.resolve())))), tmp_path / out)
    text = (tmp_path / "m1" / MANIFEST).read_text(encoding="utf-8")
    assert text == (tmp_path / "m2" / MANIFEST).read_text(encoding="utf-8").replace('"m2"', '"m1"')
    assert str(tmp_path) not in text and "inputs" not in text
    manifest = read_manifest(tmp_path / "m1")
    assert manifest.format_version == 2 and manifest.to_json() == text
    assert manifest.sources[0].test.file == "held.parquet"  # type: ignore[union-attr]
    assert [f.name for f in manifest.sources[0].test_files] == ["held.parquet"]


def test_corpus_version_1_manifest_still_loads_and_trains(work: Path) -> None:
    """A mixture built before format 2: version 1, its test file's path as typed. It loads, verifies
    and trains; `publish` refuses to upload the local path it holds."""
    edit_manifest(work / "mix", lambda m: (m.update(uft_mixture_version=1),
                                           m["sources"][1].update(test={"file": "/home/me/data/hs2_val.parquet"})))
    manifest = check_mixture(work / "mix")
    assert manifest.format_version == 1 and manifest.content_hash == content_hash(
        {s: pl.read_parquet(work / "mix" / f"data/{s}-00000-of-00001.parquet") for s in ("train", "test")})
    code, out, err = uft_train(["r.yaml"], work)
    assert code == 0, err
    assert (work / "run" / "adapter").is_dir()
    assert_one_line(*uftdata(["publish", "mix", "--repo", "org/mix", "--dry-run"], work),
                    "mix/manifest.json: field 'sources[1].test.file' holds a local path "
                    "(got '/home/me/data/hs2_val.parquet')", "format 2 keeps file names only")


def test_unknown_format_version_is_refused(work: Path) -> None:
    edit_manifest(work / "mix", lambda m: m.update(uft_mixture_version=3))
    with pytest.raises(UftDataError, match=r"field 'uft_mixture_version' is not a format this uft reads \(1, 2\) "
                                           r"\(got 3\)\. Upgrade uft"):
        read_manifest(work / "mix" / MANIFEST)
