"""`uftdata mix` stops instead of losing data silently (issue "Trust", items 1, 4, 5, 6 and 7).

Refusals run the CLI in-process (tests/corpus.py): exit 2, one line naming the option or file, the
inputs untouched and nothing left behind. Then: a sweep is all or nothing, an existing mixture is
replaced only with --overwrite, dedup keeps one survivor whatever the order, and one name per source.
"""

from __future__ import annotations

import filecmp
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus import assert_one_line, leftovers, snapshot, uftdata
from test_mix import sft_rows, write

import uftdata.mixout as mixout
from uftdata.errors import UftDataError
from uftdata.inputs import InputFile
from uftdata.mixout import MANIFEST

DATA = Path(__file__).resolve().parents[1] / "data"


def refused(cwd: Path, argv: list[str], *parts: str) -> str:
    """Run `uftdata argv` in `cwd`: exit 2, one line with `parts`, `cwd` unchanged, no leftovers."""
    before = snapshot(cwd)
    line = assert_one_line(*uftdata(argv, cwd), *parts)
    assert snapshot(cwd) == before
    assert leftovers(cwd) == []
    return line


def ok(cwd: Path, argv: list[str]) -> str:
    code, out, err = uftdata([*argv, "-q"], cwd)
    assert code == 0, err
    return out


@pytest.fixture()
def work(tmp_path: Path) -> Path:
    """a.parquet: 200 sft rows (source "a"); b.parquet: 40 (source "b")."""
    write(tmp_path / "a.parquet", sft_rows(200, "a"), "a")
    write(tmp_path / "b.parquet", sft_rows(40, "b"), "b")
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Refusals: the spec


@pytest.mark.parametrize(("argv", "parts"), [
    (["--take", "a.parquet=0.7", "--take", "b.parquet=0.5", "--total", "100"],
     ["--take: fractions sum to 1.2, more than the whole mixture", "a.parquet=0.7", "b.parquet=0.5", "at most 1"]),
    (["--take", "a.parquet=60%", "--take", "b.parquet=50%"],
     ["--take: fractions sum to 1.1, more than the whole mixture"]),
    (["--take", "a.parquet=20", "--take", "b.parquet=1.0"],
     ["--take: fractions sum to 1, leaving no room for the absolute counts", "b.parquet=1.0"]),
    (["--take", "a.parquet=0.3", "--sweep", "b.parquet=0.5,0.8", "--total", "100"],
     ["--take: fractions sum to 1.1, more than the whole mixture", "b.parquet=0.8", "a.parquet=0.3"]),
    (["--take", "a.parquet=20", "--total", "100"],
     ["--total: applies to fractional takes, and no source takes a fraction (got 100)", "Drop the total"]),
])
def test_corpus_fraction_totals_are_refused(work: Path, argv: list[str], parts: list[str]) -> None:
    refused(work, ["mix", *argv, "-o", "m"], *parts)


def test_corpus_fractions_past_one_in_a_recipe(work: Path) -> None:
    (work / "r.yaml").write_text("mixture:\n  out: m\n  total: 100\n  sources:\n"
                                 "    - {path: a.parquet, take: 0.6}\n    - {path: b.parquet, take: 0.6}\n")
    refused(work, ["mix", "r.yaml"], "r.yaml: mixture.sources: fractions sum to 1.2", "a.parquet=0.6")


def test_corpus_total_smaller_than_the_absolute_counts(work: Path) -> None:
    # 150 rows of a, and b as 0.5 of 200: 250 rows asked of a 200-row mixture.
    refused(work, ["mix", "--take", "a.parquet=150", "--take", "b.parquet=0.5", "--total", "200", "-o", "m"],
            "total: is 200 rows, fewer than the 150 rows of the absolute counts plus the fractions (0.5",
            "Raise --total")


def test_corpus_fraction_that_rounds_to_no_row(work: Path) -> None:
    refused(work, ["mix", "--take", "a.parquet=100", "--take", "b.parquet=0.001", "-o", "m"],
            "source b.parquet: take 0.001 rounds to 0 rows of this mixture (100 rows)", "Raise the fraction")


# ---------------------------------------------------------------------------------------------
# Refusals: the inputs


@pytest.mark.parametrize("test_file", ["a.parquet", "./a.parquet", "copy.parquet", "b.parquet"])
def test_corpus_test_file_that_is_a_training_file(work: Path, test_file: str) -> None:
    shutil.copyfile(work / "a.parquet", work / "copy.parquet")
    how = "a copy of training file" if test_file == "copy.parquet" else "the same file as training file"
    owner = "b.parquet" if test_file == "b.parquet" else "a.parquet"
    refused(work, ["mix", "--take", "a.parquet=all", "--take", "b.parquet=all", "--test", f"a.parquet={test_file}",
                   "-o", "m"],
            f"{test_file.removeprefix('./')}: is the test file of source a.parquet and {how} {owner} (source {owner})",
            "Give a held-out file that is not a training source")


def test_corpus_test_file_in_a_recipe_that_is_its_source(work: Path) -> None:
    (work / "r.yaml").write_text("mixture:\n  out: m\n  sources:\n"
                                 "    - {path: a.parquet, take: all, test: {file: a.parquet}}\n")
    refused(work, ["mix", "r.yaml"], "a.parquet: is the test file of source a.parquet and the same file as")


def test_corpus_test_file_with_the_same_rows_leaves_no_training_row(work: Path) -> None:
    # The same rows in another order: other bytes, but every group held out, so no training row.
    write(work / "held.parquet", sft_rows(200, "a")[::-1], "a")
    refused(work, ["mix", "--take", "a.parquet=all", "--test", "a.parquet=held.parquet", "-o", "m"],
            "source a.parquet: has no training row left of its 200 (held_out_group 200)")


def test_corpus_empty_test_split(work: Path) -> None:
    write(work / "few.parquet", sft_rows(3, "f"), "f")
    refused(work, ["mix", "--take", "few.parquet=all", "--test", "few.parquet=0.01", "-o", "m"],
            "source few.parquet: test fraction 0.01 holds out none of its 3 groups", "Raise the fraction")


def test_corpus_input_without_rows(work: Path) -> None:
    write(work / "empty.parquet", [], "e")
    refused(work, ["mix", "--take", "a.parquet=all", "--take", "empty.parquet=all", "-o", "m"],
            "empty.parquet: holds no rows; refusing to build a mixture without this source")


def test_corpus_test_file_without_rows(work: Path) -> None:
    write(work / "empty.parquet", [], "e")
    refused(work, ["mix", "--take", "a.parquet=all", "--test", "a.parquet=empty.parquet", "-o", "m"],
            "empty.parquet: holds no rows")


def test_corpus_input_without_valid_rows(work: Path) -> None:
    table = pq.read_table(work / "b.parquet")
    bad = table.set_column(table.schema.get_field_index("score"), "score", pa.array([5.0] * table.num_rows, pa.float32()))
    pq.write_table(bad, work / "bad.parquet")
    refused(work, ["mix", "--take", "a.parquet=all", "--take", "bad.parquet=all", "--on-error", "skip", "-o", "m"],
            "bad.parquet: holds no valid row (all 40 rejected)", "--on-error error")


@pytest.mark.parametrize(("body", "what"), [
    (b"", "empty.parquet: is empty (0 bytes), not a Parquet file"),
    (b'{"id": "x"}\n', "empty.parquet: is not a Parquet file, or is damaged"),
])
def test_corpus_zero_byte_or_non_parquet_file(work: Path, body: bytes, what: str) -> None:
    (work / "empty.parquet").write_bytes(body)
    refused(work, ["mix", "--take", "a.parquet=all", "--take", "empty.parquet=all", "-o", "m"], what)


# ---------------------------------------------------------------------------------------------
# The output


def test_corpus_existing_mixture_needs_overwrite_and_is_then_replaced(work: Path) -> None:
    (work / "r.yaml").write_text("mixture:\n  out: m\n  sources:\n    - {path: a.parquet, take: 20}\n")
    ok(work, ["mix", "r.yaml"])
    first = json.loads((work / "m" / MANIFEST).read_text())
    for argv in (["r.yaml"], ["--take", "a.parquet=30", "-o", "m"]):
        refused(work, ["mix", *argv, "--seed", "1"], "m: already exists", "pass --overwrite to replace it")
    ok(work, ["mix", "r.yaml", "--seed", "1", "--overwrite"])
    second = json.loads((work / "m" / MANIFEST).read_text())
    assert second["seed"] == 1 and second["content_hash"] != first["content_hash"]
    assert leftovers(work) == []


@pytest.mark.parametrize("make", ["folder", "empty_sweep_child", "file"])
def test_corpus_foreign_output_is_refused_even_with_overwrite(work: Path, make: str) -> None:
    if make == "file":
        (work / "m").write_text("notes")
        parts = ["m: is a file, not a mixture folder; refusing to replace it"]
    else:
        (work / "m").mkdir()
        (work / "m" / ("notes.txt" if make == "folder" else "README.md")).write_text("keep me")
        parts = ["m: is a folder this command did not write; refusing to replace it"]
    refused(work, ["mix", "--take", "a.parquet=20", "-o", "m", "--overwrite"], *parts)


def test_corpus_output_that_is_or_lies_in_an_input(work: Path) -> None:
    (work / "rows").mkdir()
    shutil.move(work / "b.parquet", work / "rows" / "b.parquet")
    refused(work, ["mix", "--take", "a.parquet=20", "--take", "rows=all", "-o", "rows/m"],
            "rows/m: lies inside the input folder", "Choose an -o outside the inputs")
    refused(work, ["mix", "--take", "a.parquet=20", "--take", "rows=all", "-o", "rows", "--overwrite"],
            "rows: is an input of this command")
    refused(work, ["mix", "--take", "a.parquet=20", "-o", "a.parquet", "--overwrite"], "a.parquet: is a file")


# ---------------------------------------------------------------------------------------------
# A sweep is all or nothing


def test_corpus_sweep_failing_at_its_third_count_leaves_no_mixture(work: Path) -> None:
    refused(work, ["mix", "--take", "b.parquet=all", "--sweep", "a.parquet=16,32,500", "-o", "grid"],
            "source a.parquet: has 200 rows for training, fewer than the 500 asked")
    assert not (work / "grid").exists()


def test_sweep_failing_while_writing_its_third_mixture_keeps_the_old_sweep(work: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["mix", "--take", "b.parquet=all", "--sweep", "a.parquet=16,32,64", "-o", "grid"]
    ok(work, argv)
    assert sorted(p.name for p in (work / "grid").iterdir()) == ["mix_16_all", "mix_32_all", "mix_64_all"]
    before = snapshot(work)
    written = mixout.write_shards

    def failing(parts: list[InputFile], rows: pl.DataFrame, folder: Path, split: str,
                progress: Callable[[str], None] | None) -> list[dict]:
        if folder.name == "mix_64_all":
            raise UftDataError(str(folder), "cannot be written (disk full)")
        return written(parts, rows, folder, split, progress)

    monkeypatch.setattr(mixout, "write_shards", failing)
    assert_one_line(*uftdata([*argv, "--seed", "1", "--overwrite", "-q"], work), "mix_64_all: cannot be written")
    assert snapshot(work) == before and leftovers(work) == []
    monkeypatch.undo()
    # A sweep folder is replaced whole with --overwrite, and is not a mixture folder for a plain mix.
    refused(work, argv, "grid: already exists", "It is an earlier sweep: pass --overwrite")
    refused(work, ["mix", "--take", "a.parquet=20", "-o", "grid", "--overwrite"], "grid: is a folder this command did not write")
    ok(work, ["mix", "--take", "b.parquet=all", "--sweep", "a.parquet=8,16", "-o", "grid", "--overwrite"])
    assert sorted(p.name for p in (work / "grid").iterdir()) == ["mix_16_all", "mix_8_all"]


# ---------------------------------------------------------------------------------------------
# Dedup: one survivor whatever the order


def scored(n: int, prefix: str, score: float, tag: str) -> list[dict]:
    """`score` rows whose texts (so ids) depend on `prefix` and `i` only; `tag` marks the copy."""
    return [{"prompt": [{"role": "user", "content": f"{prefix} question {i}"}],
             "completion": {"role": "assistant", "content": f"{prefix} answer {i}"},
             "score": score, "kind": "score", "label": None, "pair": None, "source_id": f"{tag}:{i}",
             "attributes": [{"name": "helpfulness", "value": score * 4}]} for i in range(n)]


def test_dedup_survivor_does_not_depend_on_row_or_file_order(tmp_path: Path) -> None:
    # 30 rows rated twice (0.25 and 0.75), 10 rated twice alike but with another source_id.
    rows = scored(30, "x", 0.75, "late") + scored(40, "y", 0.5, "one") + scored(30, "x", 0.25, "early") \
        + scored(10, "y", 0.5, "two")
    write(tmp_path / "one.parquet", rows, "s")
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    (tmp_path / "split").mkdir()
    for k, chunk in enumerate((shuffled[:33], shuffled[33:70], shuffled[70:])):
        write(tmp_path / "split" / f"part{k}.parquet", chunk, "s")
    manifests = {}
    for name, source in (("m1", "one.parquet"), ("m2", "split")):
        ok(tmp_path, ["mix", "--take", f"{source}=all", "--test", f"{source}=0.2", "-o", name])
        manifests[name] = json.loads((tmp_path / name / MANIFEST).read_text())
    assert manifests["m1"]["content_hash"] == manifests["m2"]["content_hash"]
    for shard in manifests["m1"]["files"]:
        assert filecmp.cmp(tmp_path / "m1" / shard["path"], tmp_path / "m2" / shard["path"], shallow=False)
    assert manifests["m1"]["sources"][0]["accounting"]["dropped"]["duplicate_conflicting_score"] == 30
    assert manifests["m1"]["sources"][0]["accounting"]["dropped"]["duplicate"] == 10
    kept = pl.concat([pl.read_parquet(tmp_path / "m1" / s["path"]) for s in manifests["m1"]["files"]])
    assert kept.height == 70
    # The lowest score survives (the "early" copies, last in one.parquet); among equal scores, the
    # copy the shards above show is the same whatever the order.
    doubled = kept.filter(pl.col("completion").list.first().struct.field("content").str.starts_with("x"))
    assert set(doubled["score"]) == {0.25} and set(doubled["source_id"].str.split(":").list.first()) == {"early"}
    assert kept["id"].n_unique() == kept.height


# ---------------------------------------------------------------------------------------------
# Source names: one per input, one per source


def test_default_source_names_are_per_input_and_without_split(tmp_path: Path) -> None:
    shutil.copyfile(DATA / "hh_rlhf.jsonl", tmp_path / "hh-rlhf_harmless-base_test.jsonl")
    shutil.copyfile(DATA / "kto.jsonl", tmp_path / "kto.jsonl")
    ok(tmp_path, ["feedback", "hh-rlhf_harmless-base_test.jsonl", "kto.jsonl", "-o", "fb.parquet"])
    rows = pl.read_parquet(tmp_path / "fb.parquet")
    assert sorted(rows.group_by("source", "kind").len().iter_rows()) == [
        ("hh-rlhf_harmless-base", "pairwise", rows.filter(pl.col("kind") == "pairwise").height),
        ("kto", "binary", rows.filter(pl.col("kind") == "binary").height)]
    (tmp_path / "in").mkdir()
    shutil.copyfile(DATA / "kto.jsonl", tmp_path / "in" / "part_a.jsonl")
    ok(tmp_path, ["feedback", "in", "-o", "folder.parquet"])
    assert set(pl.read_parquet(tmp_path / "folder.parquet")["source"]) == {"in"}


def test_a_source_has_one_name_in_manifest_and_card(tmp_path: Path) -> None:
    shutil.copyfile(DATA / "helpsteer2.jsonl", tmp_path / "helpsteer2.jsonl")
    shutil.copyfile(DATA / "helpsteer2_validation.jsonl", tmp_path / "helpsteer2_validation.jsonl")
    ok(tmp_path, ["score", "helpsteer2.jsonl", "-o", "hs.parquet"])
    ok(tmp_path, ["score", "helpsteer2_validation.jsonl", "-o", "hs_val.parquet"])
    out = ok(tmp_path, ["mix", "--take", "hs.parquet=all", "--test", "hs.parquet=hs_val.parquet", "-o", "m"])
    manifest = json.loads((tmp_path / "m" / MANIFEST).read_text())
    assert [s["name"] for s in manifest["sources"]] == ["helpsteer2"]
    assert {split: list(c["by_source"]) for split, c in manifest["counts"].items()} == \
        {"train": ["helpsteer2"], "test": ["helpsteer2"]}
    card = (tmp_path / "m" / "README.md").read_text()
    assert "| helpsteer2 |" in card and "by source: helpsteer2 " in card and "hs |" not in card
    assert "\n  helpsteer2: " in out
