"""The reference cache per row (docs/design.md, "Reference cache"): rows keyed by id and tokens under
the reference's settings, shared between mixtures; each row computed alone; segments verified by
sha256 on read; concurrent writers; KTO's KL rows never cached; torchrun's ranks share the misses."""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import subprocess
import sys
from multiprocessing.synchronize import Barrier
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch
from test_train_loop import read_metrics, tiny_recipe

import uft_train.refcache as refcache
from uft_train.config import recipe_to_yaml
from uft_train.data import Example
from uft_train.logps import layout
from uft_train.step import Run, reference_logps, row_key
from uft_train.train import train
from uftdata.cli import app

pytestmark = pytest.mark.usefixtures("one_thread", "cache")  # conftest.py


def mix(out: Path, *options: str) -> Path:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        app(["mix", "-o", str(out), *options, "-q"], standalone_mode=False)
    return out


def precompute(data: Path, out: Path, *overrides: str) -> Path:
    return train(tiny_recipe(data, out, "train.max_steps=1", "loss.reference=precompute", *overrides))


def recorded(run_dir: Path) -> dict:
    return json.loads((run_dir / "data.json").read_text())["reference_cache"]


def segments(store: Path) -> list[Path]:
    return sorted((store / "segments").glob("*.safetensors"))


def keys(examples: list[Example]) -> set[bytes]:
    return {row_key(e) for e in examples}


def example(n: int, tokens: tuple[int, ...] = (5, 6, 7)) -> Example:
    return Example(row=n, kind="sft", score=1.0, label=None, pair_id=None, group="g", input_ids=tokens,
                   prompt_len=1, id=f"{n:032x}", source="s")


# --- keys ---------------------------------------------------------------------------------------------

def test_a_row_key_is_its_id_and_a_digest_of_its_tokens() -> None:
    """16 bytes of id, then 16 of sha256 over (prompt_len, *input_ids) as int64: the same id with
    other tokens (a plain Parquet file's id need not hash its text) is another row."""
    key = row_key(example(1))
    assert key[:16] == bytes.fromhex("00000000000000000000000000000001") and len(key) == 32
    assert row_key(example(1)) == key != row_key(example(1, (5, 6, 8)))
    assert row_key(example(1, (5, 6, 8)))[:16] == key[:16]


def test_mixtures_sharing_rows_share_them_and_the_loss_and_kinds_are_not_in_the_key(
        mixture: Path, tmp_path: Path, runs: list[Run], cache: Path) -> None:
    """A = UltraChat + HelpSteer2, B = HelpSteer2 + hh-rlhf: B's HelpSteer2 rows are hits, its
    hh-rlhf rows misses; the store then holds A and B's rows once each. una_bce, or
    data.kinds=[score], on A: all hits in the same store (neither is in the settings)."""
    demo = mixture.parent
    a = mix(tmp_path / "a", f"--take={demo / 'ultrachat.parquet'}=20", f"--take={demo / 'helpsteer2.parquet'}=all")
    b = mix(tmp_path / "b", f"--take={demo / 'helpsteer2.parquet'}=all", f"--take={demo / 'hh_rlhf.parquet'}=all")
    first = precompute(a, tmp_path / "run_a")
    rows_a = keys(runs[-1].train)
    assert recorded(first)["hits"] == 0 and recorded(first)["misses"] == len(rows_a) > 40
    second = precompute(b, tmp_path / "run_b")
    rows_b = keys(runs[-1].train)
    shared = rows_a & rows_b
    assert {e.source for e in runs[-1].train if row_key(e) in shared} == {"helpsteer2"}
    assert recorded(second) == {"hits": len(shared), "misses": len(rows_b - shared),
                                "store": recorded(first)["store"]}
    store = Path(recorded(first)["store"])
    assert store.parent == cache / "refs" and len(segments(store)) == 2
    assert set(refcache.read_store(store)) == rows_a | rows_b
    settings = json.loads((store / "settings.json").read_text())
    assert not {"mixture_content_hash", "kinds", "loss_kinds"} & set(settings)
    assert {"model.weights_sha256", "model.config_sha256", "model.tokenizer_sha256"} <= set(settings)
    for n, override in enumerate(("loss.name=una_bce", "data.kinds=[score]")):
        again = recorded(precompute(a, tmp_path / f"again_{n}", override))
        assert again["misses"] == 0 and again["store"] == str(store)


def test_another_setting_is_another_store(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """data.max_length or the tiny model's width change what a row's log-prob is: all misses."""
    data = mix(tmp_path / "m", f"--take={mixture.parent / 'helpsteer2.parquet'}=all")
    base = recorded(precompute(data, tmp_path / "base"))
    for overrides in (["data.max_length=500"], ["model.tiny.intermediate_size=48"]):
        other = recorded(precompute(data, tmp_path / overrides[0].split("=")[0], *overrides))
        assert other["hits"] == 0 and other["misses"] == base["misses"] and other["store"] != base["store"]


# --- each row alone, equal to the online reference ------------------------------------------------

def test_cached_equals_the_online_reference_at_step_0(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """Each cached value is the row's own pass, bitwise; a step's online reference packs rows,
    which leaves float32 rounding only: step-0 rewards and loss within 1e-5 of the online run's."""
    online = read_metrics(train(tiny_recipe(mixture, tmp_path / "online", "train.max_steps=1")))[0]
    cached = read_metrics(precompute(mixture, tmp_path / "cached"))[0]
    rewards = {k: v for k, v in cached.items() if k.startswith("reward/")}
    assert rewards and all(abs(v) < 1e-5 for v in rewards.values()), rewards
    assert cached["loss"] == pytest.approx(online["loss"], abs=1e-5)
    run = runs[-1]
    assert run.refs is not None
    run.model.eval()
    for e in run.train[:6]:
        alone = reference_logps(run, layout([e], run.pad_id, padding_free=True))
        assert torch.equal(run.refs.lookup([e]), alone)
    # Packed with other rows: float32 rounding of sums near -170, a few ulps (1.5e-5 each there).
    together = reference_logps(run, run.layout(run.train[:6]))
    torch.testing.assert_close(run.refs.lookup(run.train[:6]), together, rtol=1e-6, atol=0)


# --- the paper's grid: nested takes ----------------------------------------------------------------

def test_the_grids_subset_mixture_after_its_superset_is_all_hits(mixture: Path, tmp_path: Path,
                                                                 runs: list[Run], capsys: pytest.CaptureFixture) -> None:
    """The recipes' shape (recipes/mix_*_20k.yaml): UltraChat `take` with a 1% (here 10%) test
    fraction, HelpSteer2 all with its validation file, one seed. uftdata ranks a source's rows
    before taking the first `take` (mix.select), so the 20-row take is inside the 40-row take, and
    the subset's run after the superset's computes nothing."""
    demo = mixture.parent
    common = [f"--take={demo / 'helpsteer2.parquet'}=all",
              f"--test={demo / 'helpsteer2.parquet'}={demo / 'helpsteer2_validation.parquet'}",
              f"--test={demo / 'ultrachat.parquet'}=0.1", "--seed=0"]
    big = mix(tmp_path / "mix_40_all", f"--take={demo / 'ultrachat.parquet'}=40", *common)
    small = mix(tmp_path / "mix_20_all", f"--take={demo / 'ultrachat.parquet'}=20", *common)
    ids = {name: pl.read_parquet(folder / "data" / "train-*.parquet").filter(pl.col("source") == "ultrachat")["id"]
           for name, folder in (("big", big), ("small", small))}
    assert (ids["big"].len(), ids["small"].len()) == (40, 20) and set(ids["small"]) <= set(ids["big"])

    first = recorded(precompute(big, tmp_path / "big"))
    capsys.readouterr()
    second = recorded(precompute(small, tmp_path / "small"))
    distinct = len(keys(runs[-1].train))
    assert second == {"hits": distinct, "misses": 0, "store": first["store"]}
    assert f"reference cache: {distinct} hits, 0 misses ({first['store']})" in capsys.readouterr().out


# --- verification ----------------------------------------------------------------------------------

def _flip_a_logp_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8:8 + header])["logps"]["data_offsets"]
    data[8 + header + start + 1] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupted_segment_is_set_aside_and_its_rows_recomputed(mixture: Path, tmp_path: Path,
                                                                  runs: list[Run]) -> None:
    """One byte of a stored log-prob flipped: the segment's sha256 no longer matches, so it is
    renamed to NAME.corrupt, every row is a miss again, and the new values equal the first ones."""
    data = mix(tmp_path / "m", f"--take={mixture.parent / 'kto.parquet'}=all")
    store = Path(recorded(precompute(data, tmp_path / "first"))["store"])
    (segment,) = segments(store)
    fresh = refcache.read_store(store)
    _flip_a_logp_byte(segment)
    assert refcache.read_segment(segment, store.name) is None
    again = recorded(precompute(data, tmp_path / "second"))
    assert again["hits"] == 0 and again["misses"] == len(fresh)
    assert not segment.exists() and segment.with_name(segment.name + ".corrupt").is_file()
    assert refcache.read_store(store) == fresh


def test_an_unreadable_or_foreign_segment_is_not_reused(tmp_path: Path) -> None:
    """A truncated file, and a good segment copied from another store (its settings sha256 differs)."""
    store, other = tmp_path / "refs" / ("a" * 64), tmp_path / "refs" / ("b" * 64)
    rows = {row_key(example(1)): -1.5, row_key(example(2)): -2.25}
    good = refcache.write_segment(store, {"k": 1}, rows)
    assert good is not None and refcache.read_store(store) == rows
    truncated = good.with_name("0" + good.name)
    truncated.write_bytes(good.read_bytes()[:-3])
    foreign = other / "segments" / good.name
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(good.read_bytes())
    assert refcache.read_store(store) == rows and refcache.read_store(other) == {}
    assert sorted(p.name for p in (store / "segments").iterdir()) == sorted([good.name, truncated.name + ".corrupt"])


def _write_at_once(store: Path, i: int, start: Barrier) -> None:
    rows = {row_key(example(0)): -float(i), row_key(example(2 * i)): -0.5 * i, row_key(example(2 * i + 1)): -0.25 - i}
    start.wait()
    refcache.write_segment(store, {"k": 1}, rows)


def test_writers_at_once_lose_nothing_and_duplicates_resolve_by_name(tmp_path: Path) -> None:
    """Four processes write one store at the same moment, each rows 2i and 2i+1 and row 0 (a value
    of its own there): four readable segments, all 8 rows, row 0 from the segment whose name (its
    sha256 first) sorts first, and no temporary file or lock left."""
    store = tmp_path / "refs" / ("c" * 64)
    context = multiprocessing.get_context("fork")  # the parent's imports, not a fresh interpreter each
    start = context.Barrier(4)
    writers = [context.Process(target=_write_at_once, args=(store, i, start)) for i in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    assert len(segments(store)) == 4
    assert json.loads((store / "settings.json").read_text()) == {"k": 1}
    rows = refcache.read_store(store)
    assert set(rows) == {row_key(example(n)) for n in range(8)}
    assert rows[row_key(example(7))] == -3.25 and rows[row_key(example(6))] == -1.5
    first = refcache.read_segment(segments(store)[0], store.name)
    assert first is not None and rows[row_key(example(0))] == first[row_key(example(0))]
    assert sorted(p.name for p in store.rglob("*") if p.name.startswith(".")) == []


# --- KTO --------------------------------------------------------------------------------------------

def test_ktos_kl_rows_are_never_cached(mixture: Path, tmp_path: Path, runs: list[Run]) -> None:
    """The store holds exactly the run's matched rows; the KL estimate, computed online, is the
    online run's."""
    kto = ("loss.name=kto", "data.kinds=[sft,binary,pairwise]")
    online = read_metrics(train(tiny_recipe(mixture, tmp_path / "online", "train.max_steps=1", *kto)))[0]
    store = Path(recorded(precompute(mixture, tmp_path / "cached", *kto))["store"])
    assert set(refcache.read_store(store)) == keys(runs[-1].train)
    assert read_metrics(tmp_path / "cached")[0]["kto_kl"] == pytest.approx(online["kto_kl"], abs=1e-6)


# --- ranks ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("misses", "world", "passes", "kept"), [(5, 2, [3, 3], [3, 2]), (1, 2, [1, 1], [1, 0]),
                                                                (0, 2, [0, 0], [0, 0]), (4, 3, [2, 2, 2], [2, 1, 1])])
def test_every_rank_runs_the_same_number_of_passes(misses: int, world: int, passes: list[int], kept: list[int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """ceil(misses / world) passes on every rank; a rank with fewer rows repeats one and keeps none
    of the repeats (FSDP needs every rank in every forward)."""
    train_rows = [example(n) for n in range(misses)]
    calls: list[int] = []
    monkeypatch.setattr(refcache, "reference_logps", lambda run, batch: calls.append(1) or torch.tensor([-1.0]))
    for rank in range(world):
        calls.clear()
        run = SimpleNamespace(world=world, rank=rank, train=train_rows, model=torch.nn.Linear(1, 1), pad_id=0,
                              device=torch.device("cpu"))
        out = refcache.compute_share(run, train_rows[rank::world], everyone=list(range(misses)))  # type: ignore[arg-type]
        assert (len(calls), len(out)) == (passes[rank], kept[rank])
        assert set(out) == keys(train_rows[rank::world])


def test_two_ranks_compute_what_one_process_computes(mixture: Path, tmp_path: Path, runs: list[Run],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun, 2 gloo processes: the misses split between the ranks, one segment written by rank 0,
    its values bitwise those of one process; one process then finds every row."""
    recipe = tiny_recipe(mixture, tmp_path / "ddp", "train.max_steps=1", "loss.reference=precompute")
    (tmp_path / "recipe.yaml").write_text(recipe_to_yaml(recipe), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "UFT_CACHE": str(tmp_path / "two")}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "uft_train.cli", str(tmp_path / "recipe.yaml")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    two = recorded(tmp_path / "ddp")
    assert done.stdout.count("reference cache: ") == 1 and f"0 hits, {two['misses']} misses" in done.stdout
    one = recorded(precompute(mixture, tmp_path / "one"))  # this test's own UFT_CACHE (conftest `cache`)
    assert two["misses"] == one["misses"] == len(keys(runs[-1].train))
    assert len(segments(Path(two["store"]))) == 1
    assert refcache.read_store(Path(two["store"])) == refcache.read_store(Path(one["store"]))
    monkeypatch.setenv("UFT_CACHE", str(tmp_path / "two"))
    assert recorded(precompute(mixture, tmp_path / "after"))["misses"] == 0
