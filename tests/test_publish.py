"""`uftdata publish`: the card from a known manifest, the dry run, refusal of a tampered mixture, and
the upload path against a stand-in for the Hub's HTTP API (tests/hubstub.py): private by default,
idempotent, stale shards removed, the token used but never printed or written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import UFTDATA
from hubstub import StubHub
from test_mix import build, pair_rows, sft_rows, spec, src, write

from uftdata.card import render_card as render_manifest
from uftdata.manifest import parse_manifest
from uftdata.publish import Upload, plan_against

TOKEN = "hf_stubSECRETtoken0123456789"
KNOWN_MANIFEST = {
    "uft_mixture_version": 2, "total": None, "dropped": {"not_selected": 4},
    "name": "mix_3_2", "seed": 7, "on_short": "error", "content_hash": "ab" * 32,
    "versions": {"uft": "0.1.0", "pyarrow": "26.0.1", "polars": "2.1.0"},
    "counts": {"train": {"rows": 5, "by_kind": {"pairwise": 2, "sft": 3}, "by_source": {"hh": 2, "uc": 3}}},
    "files": [{"path": "data/train-00000-of-00001.parquet", "rows": 5, "bytes": 1000, "sha256": "00" * 32}],
    "sources": [
        {"name": "uc", "take": "3", "rows_train": 3, "rows_test": 0, "repeated_rows": 0, "test": None, "test_files": [],
         "accounting": {"dropped": {"not_selected": 4}, "records_in": 7, "records_used": 3},
         "files": [{"name": "uc.parquet", "sha256": "11" * 32, "rows": 7, "upstream": {"inputs": [
             {"file": "train_sft-00000-of-00003.parquet", "layout": "messages", "license": "mit",
              "revision": "0123456789abcdef0123", "url": "hf://datasets/HuggingFaceH4/ultrachat_200k/data/x.parquet"}]}}]},
        {"name": "hh", "take": "all", "rows_train": 2, "rows_test": 0, "repeated_rows": 0, "test": None, "test_files": [],
         "accounting": {"dropped": {}, "records_in": 2, "records_used": 2},
         "files": [{"name": "hh.parquet", "sha256": "22" * 32, "rows": 2,
                    "upstream": {"inputs": [{"file": "hh.jsonl", "layout": "hh_rlhf"}]}}]},
    ],
}


def render_card(manifest: dict, **options: object) -> str:
    """The card of a manifest given as the JSON it is stored as."""
    return render_manifest(parse_manifest(manifest, "KNOWN_MANIFEST"), **options)  # type: ignore[arg-type]


def header(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_card_from_a_known_manifest() -> None:
    card = render_card(KNOWN_MANIFEST, repo_id="org/mix", histogram=True)
    meta = header(card)
    assert meta["license"] == "other"  # one source's license is not recorded
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    assert meta["dataset_info"]["splits"] == [{"name": "train", "num_bytes": 1000, "num_examples": 5}]
    assert meta["size_categories"] == ["n<1K"]
    assert ("| uc | `hf://datasets/HuggingFaceH4/ultrachat_200k/data/x.parquet` | 0123456789ab | mit | 3 | 3 | 0 | 0 "
            "| not_selected 4 |") in card
    assert "| hh | `hh.jsonl` | local file | not recorded | all | 2 | 0 | 0 | - |" in card
    assert "- **train**: 5 rows; by kind: pairwise 2, sft 3; by source: hh 2, uc 3" in card
    assert "Ratio in train: instruction (`sft`) rows 3 : feedback rows 2 (1.50 : 1)." in card
    assert "Seed 7;" in card and "built with uft 0.1.0" in card and "![Scores by kind and source](score_histogram.png)" in card
    assert 'datasets.load_dataset("org/mix")' in card and "hf download org/mix --repo-type dataset" in card
    assert "uft-train RECIPE.yaml data.path=mixes/mix_3_2" in card


def test_card_license_when_sources_agree_or_given() -> None:
    manifest = json.loads(json.dumps(KNOWN_MANIFEST))
    manifest["sources"][1]["files"][0]["upstream"]["inputs"][0]["license"] = "mit"
    assert header(render_card(manifest))["license"] == "mit"
    assert header(render_card(manifest, license="cc-by-4.0"))["license"] == "cc-by-4.0"
    assert "histogram" not in render_card(manifest)  # the mixture folder's own card has no image


def test_plan_skips_unchanged_files_and_deletes_stale_shards(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    a, b = Upload.of("data/train-00000-of-00001.parquet", tmp_path / "a"), Upload.of("README.md", tmp_path / "b")
    remote = {"data/train-00000-of-00001.parquet": {a.sha256}, "README.md": {"old"},
              "data/train-00001-of-00002.parquet": {"x"}, ".gitattributes": {"y"}}
    plan = plan_against(remote, [a, b], "org/mix", private=True)
    assert plan.uploads == [b] and plan.unchanged == [a.path_in_repo]
    assert plan.deletes == ["data/train-00001-of-00002.parquet"]  # .gitattributes is not ours to delete


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixture")
    a = write(root / "a.parquet", sft_rows(12, "a"), "a")
    b = write(root / "b.parquet", pair_rows(4, "b"), "b")
    build(spec(src(a, "all"), src(b, "all")), root / "mix")
    return root / "mix"


@pytest.fixture()
def mix(mixture: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(mixture, tmp_path / "mix"))


def uftdata(args: list[str], cwd: Path, endpoint: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(cwd / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([UFTDATA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_dry_run_lists_every_file_and_contacts_nothing(mix: Path, tmp_path: Path) -> None:
    # A closed port as the endpoint: any request would fail the command.
    proc = uftdata(["publish", str(mix), "--repo", "org/mix", "--dry-run", "--preview", "card"], tmp_path,
                   "http://127.0.0.1:9", token=None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"publish: {mix} -> http://127.0.0.1:9/datasets/org/mix (private)"
    listed = [line.split()[1] for line in lines if line.startswith("  upload")]
    assert listed == ["data/train-00000-of-00001.parquet", "manifest.json", "README.md", "score_histogram.png"]
    shard = mix / "data" / "train-00000-of-00001.parquet"
    assert f"{shard.stat().st_size:,} bytes" in lines[1]
    assert lines[-1] == "dry run: nothing was sent; the Hub was not contacted."
    assert (tmp_path / "card" / "score_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert header((tmp_path / "card" / "README.md").read_text())["license"] == "other"


def test_tampered_mixture_is_refused(mix: Path, tmp_path: Path) -> None:
    with StubHub() as hub:
        shard = mix / "data" / "train-00000-of-00001.parquet"
        data = bytearray(shard.read_bytes())
        data[100] ^= 0xFF
        shard.write_bytes(bytes(data))
        proc = uftdata(["publish", str(mix), "--repo", "org/mix"], tmp_path, hub.url)
        assert proc.returncode == 2 and "train-00000-of-00001.parquet: sha256 differs" in proc.stderr, proc.stderr
        assert hub.requests == []


def test_manifest_whose_content_hash_lies_is_refused(mix: Path, tmp_path: Path) -> None:
    manifest = json.loads((mix / "manifest.json").read_text())
    manifest["content_hash"] = "0" * 64
    (mix / "manifest.json").write_text(json.dumps(manifest))
    proc = uftdata(["publish", str(mix), "--repo", "org/mix", "--dry-run"], tmp_path, "http://127.0.0.1:9")
    assert proc.returncode == 2 and "content_hash does not match the rows" in proc.stderr, proc.stderr


def test_upload_is_private_by_default_idempotent_and_never_shows_the_token(mix: Path, tmp_path: Path) -> None:
    with StubHub() as hub:
        first = uftdata(["publish", str(mix), "--repo", "org/mix", "--preview", "card"], tmp_path, hub.url)
        assert first.returncode == 0, first.stderr
        create = next(r for r in hub.requests if r.path == "/api/repos/create")
        assert json.loads(create.body)["visibility"] == "private"
        repo = hub.repos["org/mix"]
        assert repo.visibility == "private" and "(private)" in first.stdout and "committed: " in first.stdout
        files = repo.files("main")
        for entry in json.loads((mix / "manifest.json").read_text())["files"]:
            assert files[entry["path"]] == (mix / entry["path"]).read_bytes()
        assert files["manifest.json"] == (mix / "manifest.json").read_bytes()
        assert files["README.md"] == (tmp_path / "card" / "README.md").read_bytes()
        assert 'load_dataset("org/mix")' in files["README.md"].decode()
        commits = hub.commits("org/mix")

        again = uftdata(["publish", str(mix), "--repo", "org/mix"], tmp_path, hub.url)
        assert again.returncode == 0, again.stderr
        assert "up to date" in again.stdout and hub.commits("org/mix") == commits
        assert again.stdout.count("  unchanged") == 4

        auth = [{k.lower(): v for k, v in r.headers.items()}.get("authorization") for r in hub.requests]
        assert set(auth) == {f"Bearer {TOKEN}"}  # every request carried it
        assert TOKEN not in first.stdout + first.stderr + again.stdout + again.stderr
        assert TOKEN.encode() not in all_bytes(tmp_path) and TOKEN.encode() not in b"".join(files.values())


def test_stale_shards_are_deleted_and_public_is_kept(mix: Path, tmp_path: Path) -> None:
    with StubHub() as hub:
        assert uftdata(["publish", str(mix), "--repo", "org/mix", "--public"], tmp_path, hub.url).returncode == 0
        repo = hub.repos["org/mix"]
        assert repo.visibility == "public"
        stale = {**repo.files("main"), "data/train-00001-of-00002.parquet": b"old rows"}
        repo.commit(stale)
        proc = uftdata(["publish", str(mix), "--repo", "org/mix"], tmp_path, hub.url)
        assert proc.returncode == 0, proc.stderr
        assert "delete     data/train-00001-of-00002.parquet" in proc.stdout
        assert "data/train-00001-of-00002.parquet" not in repo.files("main")
        assert "stays public" in proc.stdout  # asked private (the default) of an existing public repo


def test_published_mixture_loads_from_the_hub_with_datasets(mix: Path, tmp_path: Path) -> None:
    with StubHub() as hub:
        assert uftdata(["publish", str(mix), "--repo", "org/mix"], tmp_path, hub.url).returncode == 0
        code = ("import datasets; ds = datasets.load_dataset('org/mix'); "
                "print(ds['train'].num_rows, ds['train'].column_names[:3])")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf_home"), HF_TOKEN=TOKEN, HF_HUB_DISABLE_TELEMETRY="1")
        proc = subprocess.run([UFTDATA.replace("uftdata", "python"), "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        rows = pq.read_metadata(mix / "data" / "train-00000-of-00001.parquet").num_rows
        assert proc.stdout.split()[0] == str(rows)


def test_no_token_is_a_clear_error(mix: Path, tmp_path: Path) -> None:
    with StubHub() as hub:
        proc = uftdata(["publish", str(mix), "--repo", "org/mix"], tmp_path, hub.url, token=None)
        assert proc.returncode == 2 and "no Hugging Face token found" in proc.stderr and hub.requests == []
        bad = uftdata(["publish", str(mix), "--repo", "not-a-repo"], tmp_path, hub.url)
        assert bad.returncode == 2 and "--repo: is not a dataset repository id" in bad.stderr
