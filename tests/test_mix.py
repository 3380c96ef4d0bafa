"""`uftdata mix`: counts, nesting, test split, dedup, repeats, determinism, the folder, the spec."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import polars as pl
import pytest

from uftdata.errors import UftDataError
from uftdata.mixout import MANIFEST, build_mixtures, content_hash
from uftdata.mixspec import HeldOut, MixtureSpec, SourceSpec, load_recipe_mixture, parse_take, spec_from_options
from uftdata.rejects import Rejects
from uftdata.rows import build_rows
from uftdata.writer import open_rows


def sft_rows(n: int, prefix: str) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"{prefix} question {i}"}],
             "completion": {"role": "assistant", "content": f"{prefix} answer {i}"},
             "score": 1.0, "kind": "sft", "label": None, "pair": None, "source_id": f"{prefix}:{i}",
             "attributes": None} for i in range(n)]


def pair_rows(n: int, prefix: str) -> list[dict]:
    rows = []
    for i in range(n):
        for label, text in ((True, "good"), (False, "bad")):
            rows.append({"prompt": [{"role": "user", "content": f"{prefix} pair prompt {i}"}],
                         "completion": {"role": "assistant", "content": f"{text} {i}"},
                         "score": float(label), "kind": "pairwise", "label": label, "pair": i,
                         "source_id": f"{prefix}:{i}", "attributes": None})
    return rows


def write(path: Path, rows: list[dict], source: str) -> Path:
    with open_rows(path) as writer:
        writer.write(build_rows(rows, source=source))
    return path


def spec(*sources: SourceSpec, seed: int = 0, on_short: str = "error", total: int | None = None) -> MixtureSpec:
    return MixtureSpec(tuple(sources), seed=seed, on_short=on_short, total=total)  # type: ignore[arg-type]


def src(path: Path, take: str, test: HeldOut | None = None) -> SourceSpec:
    return SourceSpec(str(path), parse_take(take, "test"), test)


def train(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "data" / "train-*.parquet")


def build(s: MixtureSpec, out: Path, *, overwrite: bool = False) -> dict:
    return build_mixtures(s, out, Rejects.raising(), overwrite=overwrite)[0]


@pytest.fixture()
def sources(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "a.parquet", sft_rows(200, "a"), "a"), write(tmp_path / "b.parquet", pair_rows(30, "b"), "b")


def test_parse_take() -> None:
    assert parse_take("20k", "x").count == 20_000
    assert parse_take("260k", "x").count == 260_000
    assert parse_take("1.5m", "x").count == 1_500_000
    assert parse_take(20000, "x").count == 20_000
    assert parse_take("all", "x").is_all
    assert parse_take("50%", "x").fraction == 0.5
    assert parse_take(0.25, "x").fraction == 0.25
    for bad in ("2x", "-3", "1.5", "0%", "abc"):
        with pytest.raises(UftDataError):
            parse_take(bad, "x")


def test_counts_by_kind_and_pairs_count_two(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = sources
    manifest = build(spec(src(a, "50"), src(b, "20")), tmp_path / "mix")
    assert manifest["counts"]["train"] == {"rows": 70, "by_kind": {"pairwise": 20, "sft": 50},
                                           "by_source": {"a": 50, "b": 20}}
    rows = train(tmp_path / "mix")
    pairs = rows.filter(pl.col("kind") == "pairwise")
    assert pairs.group_by("pair_id").agg(pl.len(), pl.col("label").sum()).select(
        (pl.col("len") == 2).all() & (pl.col("label") == 1).all()).item()
    # The two rows of a pair are adjacent, chosen first.
    positions = rows.with_row_index().filter(pl.col("kind") == "pairwise").group_by("pair_id").agg(
        pl.col("index").sort_by(pl.col("label"), descending=True))
    assert all(p[1] == p[0] + 1 for p in positions["index"].to_list())


def test_odd_count_of_pairs_is_an_error(sources: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(UftDataError, match="even count"):
        build(spec(src(sources[1], "21")), tmp_path / "mix")


def test_nested_and_independent_of_input_order(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = sources
    small = set(train_ids(build_and_read(spec(src(a, "40")), tmp_path / "s")))
    large = set(train_ids(build_and_read(spec(src(a, "120")), tmp_path / "l")))
    assert len(small) == 40 and small < large
    # The same rows in reverse order, split over two files in a folder, give the same selection.
    folder = tmp_path / "split"
    folder.mkdir()
    rows = sft_rows(200, "a")[::-1]
    write(folder / "p1.parquet", rows[:77], "a")
    write(folder / "p2.parquet", rows[77:], "a")
    again = train_ids(build_and_read(spec(src(folder, "40")), tmp_path / "s2"))
    assert set(again) == small


def build_and_read(s: MixtureSpec, out: Path) -> pl.DataFrame:
    build(s, out)
    return train(out)


def train_ids(frame: pl.DataFrame) -> list[str]:
    return frame["id"].to_list()


def test_test_split_does_not_move_with_the_ratio(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = sources
    split = HeldOut(fraction=0.1)
    m1 = build(spec(src(a, "20", split), src(b, "20")), tmp_path / "m1")
    m2 = build(spec(src(a, "150", split), src(b, "all")), tmp_path / "m2")
    t1 = pl.read_parquet(tmp_path / "m1/data/test-*.parquet")
    t2 = pl.read_parquet(tmp_path / "m2/data/test-*.parquet")
    assert t1["id"].to_list() == t2["id"].to_list() and 5 <= t1.height <= 40
    assert m1["counts"]["test"]["rows"] == t1.height
    # No training row shares a group with a test row.
    assert not set(train(tmp_path / "m2")["group"]) & set(t2["group"])
    acc = m2["sources"][0]["accounting"]
    assert acc["records_in"] == acc["records_used"] + sum(acc["dropped"].values())


def test_test_file_holds_out_its_groups(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", sft_rows(50, "a"), "a")
    held = write(tmp_path / "held.parquet", sft_rows(5, "a")[:5], "a")  # the same prompts as a's first 5
    manifest = build(spec(src(a, "all", HeldOut(file=str(held)))), tmp_path / "m")
    assert manifest["counts"] == {"train": {"rows": 45, "by_kind": {"sft": 45}, "by_source": {"a": 45}},
                                  "test": {"rows": 5, "by_kind": {"sft": 5}, "by_source": {"a": 5}}}
    assert manifest["sources"][0]["accounting"]["dropped"] == {"held_out_group": 5}


def test_duplicates_first_source_wins_and_conflicts_are_counted(tmp_path: Path) -> None:
    a = write(tmp_path / "a.parquet", sft_rows(10, "x"), "a")
    changed = sft_rows(10, "x")
    for row in changed[:3]:
        row["score"] = 0.5  # the same prompt and completion rated: a score row (sft rows have score 1)
        row["kind"], row["label"] = "score", None
    b = write(tmp_path / "b.parquet", changed + sft_rows(4, "y"), "b")
    manifest = build(spec(src(a, "all"), src(b, "all")), tmp_path / "m")
    assert manifest["counts"]["train"]["by_source"] == {"a": 10, "b": 4}
    assert manifest["sources"][1]["accounting"]["dropped"] == {"duplicate": 7, "duplicate_conflicting_score": 3}


def test_short_source_errors_unless_repeat(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = sources
    with pytest.raises(UftDataError, match="fewer than the 250 asked"):
        build(spec(src(a, "250")), tmp_path / "m")
    assert not (tmp_path / "m").exists()
    manifest = build(spec(src(a, "250"), on_short="repeat"), tmp_path / "m")
    assert manifest["sources"][0]["repeated_rows"] == 50
    rows = train(tmp_path / "m")
    assert rows.height == 250 and rows["id"].n_unique() == 200


def test_fractions_with_one_absolute_count(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = sources
    # b is 20% of the mixture next to 80 rows of a: total 100, b 20 rows (10 pairs).
    manifest = build(spec(src(a, "80"), src(b, "20%")), tmp_path / "m")
    assert manifest["counts"]["train"]["by_source"] == {"a": 80, "b": 20}
    manifest = build(spec(src(a, "0.7"), src(b, "0.3"), total=50), tmp_path / "m2")
    # a: 35 rows; b: 15 rows is 7.5 pairs, rounded to 8 pairs by largest remainder (16 rows).
    assert manifest["counts"]["train"]["by_source"] == {"a": 35, "b": 16}


def test_deterministic_bytes_and_content_hash(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = sources
    s = spec(src(a, "60", HeldOut(fraction=0.1)), src(b, "all"))
    m1, m2 = build(s, tmp_path / "m1"), build(s, tmp_path / "m2")
    assert m1["content_hash"] == m2["content_hash"]
    for entry in m1["files"]:
        assert filecmp.cmp(tmp_path / "m1" / entry["path"], tmp_path / "m2" / entry["path"], shallow=False)
    assert (tmp_path / "m1" / MANIFEST).read_bytes().replace(b"m1", b"m2") == (tmp_path / "m2" / MANIFEST).read_bytes()
    other = build(spec(src(a, "60", HeldOut(fraction=0.1)), src(b, "all"), seed=1), tmp_path / "m3")
    assert other["content_hash"] != m1["content_hash"]


def test_shards_and_spill_buckets_keep_the_order(sources: tuple[Path, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import uftdata.mixout as mixout

    a, b = sources
    s = spec(src(a, "150"), src(b, "all"))
    one = build(s, tmp_path / "one")
    monkeypatch.setattr(mixout, "SHARD_ROWS", 40)
    monkeypatch.setattr(mixout, "BUCKET_ROWS", 8)
    many = build(s, tmp_path / "many")
    assert [f["path"] for f in many["files"]] == [f"data/train-{k:05d}-of-00006.parquet" for k in range(6)]
    assert [f["rows"] for f in many["files"]] == [40, 40, 40, 40, 40, 10]
    assert train(tmp_path / "many").equals(train(tmp_path / "one"))
    assert many["content_hash"] == one["content_hash"]


def test_content_hash_is_of_values() -> None:
    frame = pl.DataFrame({"id": ["a" * 32], "kind": ["sft"], "score": [1.0], "label": [None], "pair_id": [None]},
                         schema_overrides={"score": pl.Float32, "label": pl.Boolean, "pair_id": pl.String})
    import hashlib
    # float32 1.0 has the bits 0x3f800000 = 1065353216.
    expected = hashlib.sha256(("train\x1f" + "a" * 32 + "\x1fsft\x1f1065353216\x1f\x1f\n").encode()).hexdigest()
    assert content_hash({"train": frame}) == expected


def test_folder_loads_with_datasets(sources: tuple[Path, Path], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    a, b = sources
    build(spec(src(a, "30", HeldOut(fraction=0.2)), src(b, "10")), tmp_path / "mix")
    manifest = json.loads((tmp_path / "mix" / MANIFEST).read_text())
    loaded = datasets.load_dataset(str(tmp_path / "mix"))
    assert loaded["train"].num_rows == 40 and loaded["test"].num_rows == manifest["counts"]["test"]["rows"]
    assert loaded["train"][0]["completion"][0]["role"] == "assistant"
    assert "configs:" in (tmp_path / "mix" / "README.md").read_text()


def test_card_row_counts_are_verified_by_datasets(sources: tuple[Path, Path], tmp_path: Path) -> None:
    # datasets ignores a card's whole `splits` list when an entry lacks num_bytes; with it, a card
    # whose counts disagree with the shards is an error instead of a silent load.
    datasets = pytest.importorskip("datasets")
    a, _ = sources
    build(spec(src(a, "30")), tmp_path / "mix")
    card = tmp_path / "mix" / "README.md"
    card.write_text(card.read_text().replace("num_examples: 30", "num_examples: 31"))
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):
        datasets.load_dataset(str(tmp_path / "mix"), cache_dir=str(tmp_path / "hf"))


def test_rebuilt_folder_does_not_load_stale_rows(sources: tuple[Path, Path], tmp_path: Path) -> None:
    # datasets caches a local folder under its name and card; a rebuild in place (same counts, other
    # seed) must still load the new rows.
    datasets = pytest.importorskip("datasets")
    a, _ = sources
    for seed in (0, 1):
        build(spec(src(a, "30"), seed=seed), tmp_path / "mix", overwrite=True)
        loaded = datasets.load_dataset(str(tmp_path / "mix"), cache_dir=str(tmp_path / "hf"))
        assert loaded["train"]["id"] == train(tmp_path / "mix")["id"].to_list()


def test_sweep_builds_nested_grid(sources: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = sources
    s = spec_from_options([f"{a}=all", f"{b}=all"], [f"{a}=0.05"], seed=0, on_short="error", total=None,
                          sweep=f"{a}=16,32,64")
    manifests = build_mixtures(s, tmp_path / "grid", Rejects.raising())
    assert [m["name"] for m in manifests] == ["mix_16_all", "mix_32_all", "mix_64_all"]
    ids = [set(train(tmp_path / "grid" / m["name"]).filter(pl.col("source") == "a")["id"]) for m in manifests]
    assert ids[0] < ids[1] < ids[2]


def test_refuses_to_replace_a_folder_that_is_not_a_mixture(sources: tuple[Path, Path], tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UftDataError, match="did not write; refusing to replace it"):
        build(spec(src(sources[0], "10")), tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "notes.txt").exists()


def test_recipe_mixture_section_and_errors(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("mixture:\n  out: mixes/x\n  seed: 3\n  sources:\n"
                      "    - {path: a.parquet, take: 20k, test: {fraction: 0.01}}\n"
                      "    - {path: b.parquet, take: all, test: {file: b_val.parquet}}\n")
    s = load_recipe_mixture(recipe)
    assert s.seed == 3 and s.out == "mixes/x" and s.sources[0].take.count == 20_000
    assert s.sources[1].test == HeldOut(file="b_val.parquet")
    recipe.write_text("mixture:\n  seeds: 1\n  sources:\n    - {path: a.parquet, take: 2x, tst: 1}\n")
    with pytest.raises(UftDataError) as error:
        load_recipe_mixture(recipe)
    message = error.value.line()
    assert "mixture.seeds: unknown key" in message and "tst: unknown key" in message and "'2x'" in message
