"""Hub sources (`hf://datasets/...`) read through huggingface_hub from a stand-in Hub (tests/hubstub.py)
serving local folders laid out like the real datasets: ultrachat_200k (card configs, Parquet shards),
HelpSteer2 (gzipped JSONL at the root, split by file name), hh-rlhf (one folder per subset)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import UFTDATA
from hubstub import StubHub

from uftdata.errors import UftDataError
from uftdata.hub import HubOptions, _glob, parse_url

TOKEN = "hf_stubSECRETtoken0123456789"
USER = {"role": "user", "content": "Name a prime."}


def messages_record(i: int) -> dict:
    return {"prompt": f"q{i}", "prompt_id": f"{i:064x}",
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def helpsteer_record(i: int) -> dict:
    return {"prompt": f"p{i}", "response": f"r{i}", "helpfulness": i % 5, "correctness": 4, "coherence": 4,
            "complexity": 1, "verbosity": 1}


def write_gz_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


@pytest.fixture()
def hub(tmp_path: Path) -> Iterator[StubHub]:
    ultrachat = tmp_path / "ultrachat_200k"
    (ultrachat / "data").mkdir(parents=True)
    (ultrachat / "README.md").write_text(
        "---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - split: train_sft\n    path: data/train_sft-*\n  - split: test_sft\n    path: data/test_sft-*\n---\n# card\n")
    for name, rows in (("train_sft-00000-of-00002", range(0, 3)), ("train_sft-00001-of-00002", range(3, 5)),
                       ("test_sft-00000-of-00001", range(5, 7))):
        pq.write_table(pa.Table.from_pylist([messages_record(i) for i in rows]), ultrachat / "data" / f"{name}.parquet")
    helpsteer = tmp_path / "HelpSteer2"
    write_gz_jsonl(helpsteer / "train.jsonl.gz", [helpsteer_record(i) for i in range(4)])
    write_gz_jsonl(helpsteer / "validation.jsonl.gz", [helpsteer_record(i) for i in range(10, 12)])
    (helpsteer / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# HelpSteer2\n")
    hh = tmp_path / "hh-rlhf"
    pair = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    write_gz_jsonl(hh / "harmless-base" / "train.jsonl.gz", [pair])
    write_gz_jsonl(hh / "harmless-base" / "test.jsonl.gz", [pair, pair])
    write_gz_jsonl(hh / "helpful-base" / "train.jsonl.gz", [pair, pair, pair])
    with StubHub() as stub:
        stub.add_dataset("HuggingFaceH4/ultrachat_200k", ultrachat)
        stub.add_dataset("nvidia/HelpSteer2", helpsteer)
        stub.add_dataset("Anthropic/hh-rlhf", hh)
        yield stub


def uftdata(args: list[str], cwd: Path, hub: StubHub, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(cwd / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([UFTDATA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def summary_of(path: Path) -> dict:
    return json.loads(pq.read_metadata(path).metadata[b"uft.summary"])


def test_unfold_reads_the_card_configs_split_and_records_the_commit(hub: StubHub, tmp_path: Path) -> None:
    proc = uftdata(["unfold", "hf://datasets/HuggingFaceH4/ultrachat_200k", "--hf-split", "train_sft",
                    "-o", "rows.parquet"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    rows = pq.read_table(tmp_path / "rows.parquet")
    assert rows["source_id"].to_pylist() == [f"{i:064x}#0" for i in range(5)]  # both train shards, in order
    assert set(rows["source"].to_pylist()) == {"ultrachat_200k"}  # default source: the dataset's name
    inputs = summary_of(tmp_path / "rows.parquet")["inputs"]
    commit = hub.repos["HuggingFaceH4/ultrachat_200k"].refs["main"]
    assert inputs[0] == {"file": "train_sft-00000-of-00002.parquet", "layout": "messages", "license": "mit",
                         "revision": commit,
                         "url": "hf://datasets/HuggingFaceH4/ultrachat_200k/data/train_sft-00000-of-00002.parquet"}
    parquet_gets = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(".parquet")]
    assert parquet_gets and all("range" in {k.lower() for k in r.headers} for r in parquet_gets)  # byte ranges


def test_rows_from_the_hub_equal_rows_from_the_same_local_file(hub: StubHub, tmp_path: Path) -> None:
    remote = uftdata(["score", "hf://datasets/nvidia/HelpSteer2", "-o", "hub.parquet"], tmp_path, hub)
    assert remote.returncode == 0, remote.stderr
    local_file = tmp_path / "train.jsonl.gz"
    local_file.write_bytes(hub.repos["nvidia/HelpSteer2"].files("main")["train.jsonl.gz"])
    local = uftdata(["score", "train.jsonl.gz", "--source", "HelpSteer2", "-o", "local.parquet"], tmp_path, hub)
    assert local.returncode == 0, local.stderr
    assert pq.read_table(tmp_path / "hub.parquet").equals(pq.read_table(tmp_path / "local.parquet"))
    assert pq.read_table(tmp_path / "hub.parquet").num_rows == 4  # train only: validation.jsonl.gz is another split
    gets = [r for r in hub.requests if r.path.endswith("/train.jsonl.gz")]
    # streamed, never ranged: one GET to detect the layout from the first record, one to read it all
    assert len(gets) == 2 and all("range" not in {k.lower() for k in g.headers} for g in gets)


def test_split_option_and_folder_urls(hub: StubHub, tmp_path: Path) -> None:
    proc = uftdata(["score", "hf://datasets/nvidia/HelpSteer2", "--hf-split", "validation", "-o", "v.parquet"],
                   tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(tmp_path / "v.parquet")["prompt"].to_pylist()[0] == [{"role": "user", "content": "p10"}]
    proc = uftdata(["feedback", "hf://datasets/Anthropic/hh-rlhf/harmless-base", "-o", "hh.parquet"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    assert pq.read_table(tmp_path / "hh.parquet").num_rows == 2  # harmless-base/train only: one pair
    proc = uftdata(["feedback", "hf://datasets/Anthropic/hh-rlhf", "-o", "all.parquet"], tmp_path, hub)
    assert pq.read_table(tmp_path / "all.parquet").num_rows == 8  # every subset's train file: 4 pairs


def test_revision_is_read_and_recorded(hub: StubHub, tmp_path: Path) -> None:
    repo = hub.repos["nvidia/HelpSteer2"]
    first = repo.refs["main"]
    files = dict(repo.files("main"))
    files["train.jsonl.gz"] = gzip.compress(json.dumps(helpsteer_record(99)).encode() + b"\n")
    repo.commit(files)
    for args in (["hf://datasets/nvidia/HelpSteer2", "--hf-revision", first], [f"hf://datasets/nvidia/HelpSteer2@{first}"]):
        proc = uftdata(["score", *args, "-o", "old.parquet"], tmp_path, hub)
        assert proc.returncode == 0, proc.stderr
        assert pq.read_table(tmp_path / "old.parquet").num_rows == 4
        assert summary_of(tmp_path / "old.parquet")["inputs"][0]["revision"] == first
    proc = uftdata(["score", "hf://datasets/nvidia/HelpSteer2", "-o", "new.parquet"], tmp_path, hub)
    assert pq.read_table(tmp_path / "new.parquet").num_rows == 1
    assert summary_of(tmp_path / "new.parquet")["inputs"][0]["revision"] == repo.refs["main"] != first


def test_errors_name_the_url_and_exit_2(hub: StubHub, tmp_path: Path) -> None:
    cases = {
        ("hf://datasets/nobody/nothing",): "dataset not found, or private and no token has access",
        ("hf://datasets/nvidia/HelpSteer2", "--hf-revision", "v9"): "revision not found",
        ("hf://datasets/nvidia/HelpSteer2", "--hf-split", "dev2"): "holds no",
        ("hf://datasets/HuggingFaceH4/ultrachat_200k", "--hf-split", "train"): "has no such split",
        ("hf://datasets/HuggingFaceH4/ultrachat_200k", "--hf-config", "x"): "has no such config",
    }
    for args, message in cases.items():
        proc = uftdata(["score", *args, "-o", "x.parquet"], tmp_path, hub)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith("uftdata: error: hf://datasets/"), proc.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_private_dataset_needs_the_token_which_is_never_printed(hub: StubHub, tmp_path: Path) -> None:
    hub.add_dataset("org/private", tmp_path / "HelpSteer2" if (tmp_path / "HelpSteer2").is_dir() else tmp_path,
                    visibility="private")
    without = uftdata(["score", "hf://datasets/org/private", "-o", "p.parquet"], tmp_path, hub)
    assert without.returncode == 2 and "HF_TOKEN" in without.stderr
    with_token = uftdata(["score", "hf://datasets/org/private", "-o", "p.parquet"], tmp_path, hub, token=TOKEN)
    assert with_token.returncode == 0, with_token.stderr
    assert TOKEN not in with_token.stdout + with_token.stderr + without.stderr
    assert TOKEN.encode() not in (tmp_path / "p.parquet").read_bytes()
    assert {k.lower(): v for k, v in hub.requests[-1].headers.items()}["authorization"] == f"Bearer {TOKEN}"  # used


def test_mix_reads_a_hub_source_and_pins_it_by_commit(hub: StubHub, tmp_path: Path) -> None:
    assert uftdata(["score", "hf://datasets/nvidia/HelpSteer2", "-o", "hs2.parquet"], tmp_path, hub).returncode == 0
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "hs2.parquet").write_bytes((tmp_path / "hs2.parquet").read_bytes())
    commit = hub.add_dataset("org/rows", folder)
    proc = uftdata(["mix", "--take", "hf://datasets/org/rows/hs2.parquet=all", "-o", "mix"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    source = manifest["sources"][0]
    assert source["name"] == "HelpSteer2" and source["rows_train"] == 4  # the `source` its rows carry
    entry = source["files"][0]
    assert entry["url"] == "hf://datasets/org/rows/hs2.parquet" and entry["revision"] == commit
    assert "sha256" not in entry  # pinned by commit, not hashed (that would download it whole)
    assert entry["upstream"]["inputs"][0]["url"] == "hf://datasets/nvidia/HelpSteer2/train.jsonl.gz"


def test_inspect_reads_a_hub_schema_file(hub: StubHub, tmp_path: Path) -> None:
    assert uftdata(["score", "hf://datasets/nvidia/HelpSteer2", "-o", "hs2.parquet"], tmp_path, hub).returncode == 0
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "hs2.parquet").write_bytes((tmp_path / "hs2.parquet").read_bytes())
    hub.add_dataset("org/rows", folder)
    proc = uftdata(["inspect", "hf://datasets/org/rows", "--json"], tmp_path, hub)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rows"] == 4 and report["files"] == ["hs2.parquet"] and report["problems"] == []


def test_parse_url() -> None:
    url = parse_url("hf://datasets/org/name@v1.0/sub/dir")
    assert (url.repo_id, url.revision, url.path) == ("org/name", "v1.0", "sub/dir")
    assert parse_url("hf://datasets/org/name").text == "hf://datasets/org/name"
    with pytest.raises(UftDataError, match="names no dataset"):
        parse_url("hf://datasets/org")
    with pytest.raises(UftDataError, match="is not a Hub dataset URL"):
        parse_url("hf://models/org/name")


def test_glob_follows_fsspec_semantics() -> None:
    assert _glob("data/train-*").fullmatch("data/train-00000-of-00002.parquet")
    assert not _glob("data/train-*").fullmatch("data/sub/train-0.parquet")
    assert _glob("**/*.parquet").fullmatch("a/b/c.parquet") and _glob("**/*.parquet").fullmatch("c.parquet")
    assert HubOptions().split is None
