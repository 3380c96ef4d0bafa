"""Inputs a new user hits (issue "Trust", items 5 and 7): damaged or non-gzip `.gz` files, damaged and
empty Parquet files, `hf://` without network, an unknown `publish --license`, `inspect` on files that
are not rows, `uftdata --version`, and the figures' legends and ticks.

Every `test_corpus_*` case is a bad input: exit status 2, ONE stderr line naming the file (and the
line or row where known) and what is wrong, no traceback, the inputs untouched and nothing left
behind. The commands run in-process (tests/corpus.py); only `--version` also runs the console script.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import UFTDATA
from corpus import assert_one_line, leftovers, snapshot, uftdata

from uft_train.plots import curves_figure
from uftdata import __version__, reader
from uftdata.plots import compact_number, lengths_figure, scores_figure

ULTRACHAT = {"id": "a", "data": ["How do I boil an egg?", "Nine minutes in boiling water."]}
HELPSTEER = {"prompt": "Name a prime.", "response": "7", "helpfulness": 4, "correctness": 4, "coherence": 4,
             "complexity": 1, "verbosity": 1}
HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}
RECORDS = {"unfold": ULTRACHAT, "score": HELPSTEER, "feedback": HH}


def jsonl(record: dict, n: int) -> bytes:
    """`n` copies of `record`, numbered so no two lines are equal (and gzip cannot fold them into a few bytes)."""
    return "".join(json.dumps({**record, "n": i}) + "\n" for i in range(n)).encode()


# Each damage: (name, make the file's bytes from the uncompressed JSONL, expected parts of the line).
def _garbage(body: bytes) -> bytes:
    whole = gzip.compress(body, mtime=0)
    return whole[:10] + bytes(range(256)) * 4  # a valid gzip header, then no deflate stream


def _crc(body: bytes) -> bytes:
    whole = gzip.compress(body, mtime=0)
    return whole[:-8] + b"\0\0\0\0" + whole[-4:]  # the trailer's CRC32 zeroed


GZ_DAMAGES: dict[str, tuple[Callable[[bytes], bytes], tuple[str, ...]]] = {
    "not_gzip": (lambda body: body, ("is not gzip", "rename it without `.gz`")),
    "truncated": (lambda body: gzip.compress(body, mtime=0)[:-40], ("is truncated", "ends before the end marker")),
    "garbage_after_header": (_garbage, ("is damaged", "cannot be decompressed")),
    "checksum": (_crc, ("is damaged", "fails the check", "CRC")),
}


@pytest.fixture()
def work(tmp_path: Path) -> Iterator[Path]:
    """tmp/in holds the inputs (snapshotted), tmp/out the outputs; both checked after the command."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    yield tmp_path
    assert leftovers(tmp_path) == []


def run_bad(work: Path, argv: list[str], *parts: str) -> str:
    """Run `uftdata argv` in `work`, assert the bad-input contract, return the error line."""
    before = snapshot(work / "in")
    code, out, err = uftdata(argv, work)
    line = assert_one_line(code, out, err, *parts)
    assert out == ""
    assert snapshot(work / "in") == before, "an input was changed"
    assert os.listdir(work / "out") == [], "an output (or part of one) was left behind"
    return line


@pytest.mark.parametrize("damage", list(GZ_DAMAGES))
@pytest.mark.parametrize("command", ["unfold", "score", "feedback"])
def test_corpus_damaged_gzip_input_is_one_line(work: Path, command: str, damage: str) -> None:
    make, parts = GZ_DAMAGES[damage]
    (work / "in" / "c.jsonl.gz").write_bytes(make(jsonl(RECORDS[command], 50)))
    run_bad(work, [command, "in/c.jsonl.gz", "-o", "out/rows.parquet", "-q"], "in/c.jsonl.gz: ", *parts)


def test_corpus_damaged_gzip_stops_even_with_on_error_skip(work: Path) -> None:
    # A damaged file is not a bad record: skipping it would silently drop the rest of the file.
    (work / "in" / "c.jsonl.gz").write_bytes(gzip.compress(jsonl(ULTRACHAT, 50), mtime=0)[:-40])
    run_bad(work, ["unfold", "in/c.jsonl.gz", "-o", "out/rows.parquet", "-q", "--on-error", "skip"],
            "in/c.jsonl.gz: ", "is truncated")


def test_corpus_truncated_gzip_names_the_line_reached(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "BLOCK_BYTES", 64)  # read in small blocks, as a 16 MB block reads a big file
    body = jsonl(ULTRACHAT, 200)
    damaged = gzip.compress(body, mtime=0)[:-400]
    (work / "in" / "c.jsonl.gz").write_bytes(damaged)
    intact = zlib.decompressobj(wbits=31).decompress(damaged).count(b"\n")  # whole lines before the break
    line = run_bad(work, ["unfold", "in/c.jsonl.gz", "-o", "out/rows.parquet", "-q"],
                   "in/c.jsonl.gz: ", "is truncated", "(the damage is after line ")
    reached = int(line.split("after line ")[1].split(")")[0])
    assert intact - 2 <= reached <= intact < 200


def test_corpus_damaged_gzipped_parquet_is_one_line(work: Path) -> None:
    pl.DataFrame({"data": [ULTRACHAT["data"]] * 20}).write_parquet(work / "rows.parquet")
    (work / "in" / "c.parquet.gz").write_bytes(gzip.compress((work / "rows.parquet").read_bytes(), mtime=0)[:-30])
    run_bad(work, ["unfold", "in/c.parquet.gz", "-o", "out/rows.parquet", "-q"], "in/c.parquet.gz: ", "is truncated")


def _parquet_bytes(work: Path) -> bytes:
    path = work / "source.parquet"
    pl.DataFrame({"data": [[f"question {i}?", f"answer {i}."] for i in range(300)]}).write_parquet(path)
    return path.read_bytes()


def _damaged_page(work: Path) -> bytes:
    data = bytearray(_parquet_bytes(work))
    chunk = pq.ParquetFile(work / "source.parquet").metadata.row_group(0).column(0)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data[start + 16: start + chunk.total_compressed_size] = b"\xff" * (chunk.total_compressed_size - 16)
    return bytes(data)  # the footer intact: the file opens, its pages do not decode


PARQUET_DAMAGES: dict[str, tuple[Callable[[Path], bytes], tuple[str, ...]]] = {
    "zero_bytes": (lambda work: b"", ("in/c.parquet: ", "is empty (0 bytes), not a Parquet file")),
    "not_parquet": (lambda work: json.dumps(ULTRACHAT).encode() + b"\n",
                    ("in/c.parquet: ", "is not a Parquet file, or is damaged")),
    "truncated": (lambda work: _parquet_bytes(work)[:-100], ("in/c.parquet: ", "is not a Parquet file, or is damaged")),
    "damaged_page": (_damaged_page, ("in/c.parquet: row 0: ", "cannot be read: the Parquet data is damaged")),
}


@pytest.mark.parametrize("damage", list(PARQUET_DAMAGES))
@pytest.mark.parametrize("command", ["unfold", "score", "feedback", "inspect"])
def test_corpus_damaged_parquet_input_is_one_line(work: Path, command: str, damage: str) -> None:
    make, parts = PARQUET_DAMAGES[damage]
    (work / "in" / "c.parquet").write_bytes(make(work))
    argv = ["inspect", "in/c.parquet"] if command == "inspect" else [command, "in/c.parquet", "-o", "out/rows.parquet", "-q"]
    run_bad(work, argv, *parts)


@pytest.mark.parametrize("name, body, parts", [
    ("c.jsonl.gz", gzip.compress(jsonl(ULTRACHAT, 20), mtime=0)[:-40], ("in/c.jsonl.gz: ", "is truncated")),
    ("c.jsonl.gz", jsonl(ULTRACHAT, 3), ("in/c.jsonl.gz: ", "is not gzip")),
    ("c.jsonl", b"", ("c.jsonl: ", "file holds no records")),
    ("missing.parquet", None, ("in/missing.parquet: ", "no such file or folder")),
], ids=["truncated_gz", "not_gzip", "zero_byte_jsonl", "missing"])
def test_corpus_inspect_cannot_read_is_exit_2(work: Path, name: str, body: bytes | None, parts: tuple[str, ...]) -> None:
    if body is not None:
        (work / "in" / name).write_bytes(body)
    run_bad(work, ["inspect", f"in/{name}"], *parts)


@pytest.mark.parametrize("command", ["unfold", "score", "feedback"])
def test_corpus_zero_byte_gzip_input_is_one_line(work: Path, command: str) -> None:
    (work / "in" / "c.jsonl.gz").write_bytes(b"")
    run_bad(work, [command, "in/c.jsonl.gz", "-o", "out/rows.parquet", "-q"], "c.jsonl.gz: ", "file holds no records")


# ---------------------------------------------------------------------------------------------
# hf:// without a reachable Hub


def closed_port() -> int:
    """A local port nothing listens on: bound, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def no_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """huggingface_hub pointed at a closed local port (in-process: its constants were read at import)."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 2)
    return endpoint


@pytest.mark.parametrize("argv", [
    ["unfold", "hf://datasets/org/chats", "-o", "out/rows.parquet", "-q"],
    ["score", "hf://datasets/org/chats@v1.0", "-o", "out/rows.parquet", "-q"],
    ["inspect", "hf://datasets/org/chats"],
], ids=["unfold", "score_at_revision", "inspect"])
def test_corpus_hub_unreachable_says_how_to_work_offline(work: Path, no_hub: str, argv: list[str]) -> None:
    url = argv[1]
    revision = " --revision v1.0" if "@" in url else ""
    run_bad(work, argv, f"{url}: the Hub could not be reached at {no_hub} (",
            f"To work offline, download it on a connected machine with `hf download org/chats --repo-type dataset"
            f"{revision} --local-dir DIR`, then pass DIR (or its files) instead of the hf:// URL.")


def test_corpus_hub_offline_mode_says_how_to_work_offline(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    run_bad(work, ["unfold", "hf://datasets/org/chats", "-o", "out/rows.parquet", "-q"],
            "hf://datasets/org/chats: the Hub could not be reached", "offline mode", "To work offline")


def test_corpus_hub_silent_times_out(work: Path, no_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Hub behind a firewall that drops packets: huggingface_hub's API calls wait forever by default.
    from huggingface_hub import constants

    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.2)
        run_bad(work, ["unfold", "hf://datasets/org/chats", "-o", "out/rows.parquet", "-q"],
                f"hf://datasets/org/chats: the Hub could not be reached at {endpoint} (", "To work offline")


# ---------------------------------------------------------------------------------------------
# publish --license


def test_corpus_unknown_license_is_refused_before_anything_is_read(work: Path, no_hub: str) -> None:
    (work / "in" / "mix").mkdir()  # not even a mixture: the license is checked first
    line = run_bad(work, ["publish", "in/mix", "--repo", "org/mix", "--license", "Apache-2.0", "--preview", "out/card"],
                   "--license: is not a license id the Hub knows (got 'Apache-2.0'); ",
                   "expected an id of https://huggingface.co/docs/hub/repositories-licenses; the closest: apache-2.0",
                   "For a license the Hub does not list, pass --license other.")
    assert "Traceback" not in line


def test_corpus_publish_without_network_is_one_line(work: Path, mixture: Path, no_hub: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(mixture, work / "in" / "mix")
    monkeypatch.setenv("HF_TOKEN", "hf_stubSECRETtoken0123456789")
    line = run_bad(work, ["publish", "in/mix", "--repo", "org/mix"],
                   "hf://datasets/org/mix: cannot reach the Hub (", "Check the network and HF_ENDPOINT")
    assert "hf_stub" not in line


def test_hub_license_ids_accept_listed_ids_and_other() -> None:
    from uftdata.publish import HUB_LICENSES, check_license

    assert check_license(None) is None
    for license in ("apache-2.0", "cc-by-4.0", "cc-by-nc-4.0", "mit", "odc-by", "llama3.1", "other", "unknown"):
        assert check_license(license) == license
    assert len(HUB_LICENSES) == len(set(HUB_LICENSES)) and all(i == i.lower() for i in HUB_LICENSES)


# ---------------------------------------------------------------------------------------------
# inspect on files that are not rows: read, and found wrong (exit 1, with the converting command)


@pytest.mark.parametrize("name, record, layout, command", [
    ("chats.jsonl", ULTRACHAT, "ultrachat", "unfold"),
    ("ratings.jsonl.gz", HELPSTEER, "helpsteer2", "score"),
    ("hh.jsonl", HH, "hh_rlhf", "feedback"),
])
def test_inspect_raw_jsonl_is_a_found_problem_naming_the_converter(tmp_path: Path, name: str, record: dict,
                                                                   layout: str, command: str) -> None:
    body = jsonl(record, 3)
    (tmp_path / name).write_bytes(gzip.compress(body, mtime=0) if name.endswith(".gz") else body)
    code, out, err = uftdata(["inspect", name], tmp_path)
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == f"{name}: 0 rows in 1 file(s)"
    assert lines[1] == "schema: 1 problem(s)"
    stem = name.split(".")[0]
    assert lines[2].startswith(f"  {name}: is not in the uft row schema (a Parquet file of rows); "
                               f"it looks like the {layout} layout (")
    assert lines[2].endswith(f"convert it with `uftdata {command} {name} -o {stem}.parquet`, then inspect that")
    assert "schema: valid" not in out


def test_inspect_raw_parquet_source_is_a_found_problem(tmp_path: Path) -> None:
    pl.DataFrame({"data": [ULTRACHAT["data"]] * 3}).write_parquet(tmp_path / "chats.parquet")
    code, out, err = uftdata(["inspect", "chats.parquet", "--json"], tmp_path)
    assert (code, err) == (1, "")
    report = json.loads(out)
    assert report["rows"] == 0
    assert report["problems"] == [
        "chats.parquet: is not in the uft row schema (12 columns missing or mistyped); it looks like the ultrachat "
        "layout (raw UltraChat: data = [user, assistant, user, ...]); convert it with "
        "`uftdata unfold chats.parquet -o chats_rows.parquet`, then inspect that"]


def test_inspect_unknown_json_names_its_fields(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text('{"question": "Hi", "answer": "Yo"}\n')
    code, out, _ = uftdata(["inspect", "notes.jsonl"], tmp_path)
    assert code == 1
    assert ("notes.jsonl: is not in the uft row schema (a Parquet file of rows); its first record's fields "
            "['answer', 'question'] match no known layout; convert it with `uftdata unfold|score|feedback "
            "notes.jsonl -o ROWS.parquet --format LAYOUT`") in out


# ---------------------------------------------------------------------------------------------
# --version


def test_version_in_process(tmp_path: Path) -> None:
    assert uftdata(["--version"], tmp_path) == (0, f"uftdata {__version__}\n", "")


def test_version_console_script(tmp_path: Path) -> None:
    if not Path(UFTDATA).exists():
        pytest.skip("the `uftdata` console script is not installed")
    proc = subprocess.run([UFTDATA, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"uftdata {__version__}\n", "")


# ---------------------------------------------------------------------------------------------
# Figures: read back from the figure objects, not from pixels


def score_stats(scores: list[float], sources: list[str], kind: str = "pairwise") -> pl.DataFrame:
    n = len(scores)
    return pl.DataFrame({"split": ["train"] * n, "source": sources, "kind": [kind] * n, "score": scores,
                         "prompt_chars": [10] * n, "completion_chars": [10] * n, "prompt_messages": [1] * n})


def spread_scores(n: int) -> list[float]:
    """Scores in every bin of 0.05, each bin holding 8 to 10 rows: no corner of the panel is free."""
    return [(b + 0.5) / 20 for b in range(20) for _ in range(8 + b % 3)][:n]


@pytest.mark.parametrize("shape, sources", [("ends", 1), ("spread", 1), ("spread", 3), ("spread", 8)])
def test_scores_legend_sits_above_the_tallest_bars(shape: str, sources: int) -> None:
    # pairwise rows score 0 or 1 (the tallest bars at both edges); scores spread over [0,1] leave no
    # free corner, where matplotlib's "best" location put the legend over bars
    scores = [float(i % 2) for i in range(180)] if shape == "ends" else spread_scores(180)
    names = [f"source_{i % sources}" for i in range(len(scores))]
    figure = scores_figure(score_stats(scores, names, kind="score"))
    figure.canvas.draw()
    (ax,) = figure.axes
    legend = ax.get_legend().get_window_extent()
    bars = [bar.get_window_extent() for bar in ax.patches if bar.get_height() > 0]
    assert bars
    for bar in bars:  # display coordinates: the legend is above every bar, or beside it
        assert legend.y0 >= bar.y1 or legend.x0 >= bar.x1 or legend.x1 <= bar.x0, (legend, bar)


def test_scores_figure_is_the_same_bytes_twice(tmp_path: Path) -> None:
    from uftdata.figures import save_png

    stats = score_stats([0.0, 1.0, 1.0, 0.5], ["a", "a", "b", "b"])
    save_png(scores_figure(stats), tmp_path / "one.png")
    save_png(scores_figure(stats), tmp_path / "two.png")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "two.png").read_bytes()


@pytest.mark.parametrize("low, high", [(1, 200_000), (1_000, 1_500_000), (20, 800)])
def test_length_tick_labels_do_not_overlap(low: int, high: int) -> None:
    rng = np.random.default_rng(0)
    values = np.exp(rng.uniform(np.log(low), np.log(high), 300)).astype(int)
    stats = score_stats([1.0] * 300, ["a"] * 150 + ["b"] * 150, kind="sft").with_columns(
        prompt_chars=pl.Series(values), completion_chars=pl.Series(values[::-1]))
    figure = lengths_figure(stats)
    figure.canvas.draw()
    for ax in figure.axes:
        low_x, high_x = ax.get_xlim()
        labels = [t for t in ax.get_xticklabels() if t.get_text() and low_x <= t.get_position()[0] <= high_x]
        assert len(labels) >= 3
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        for left, right in zip(boxes, boxes[1:]):
            assert left.x1 < right.x0, [t.get_text() for t in labels]


def test_compact_number_labels() -> None:
    assert [compact_number(x) for x in (1, 20, 500, 1_000, 2_000, 50_000, 1_500_000)] == \
        ["1", "20", "500", "1k", "2k", "50k", "1.5M"]


@pytest.mark.parametrize("last", [3, 7])
def test_curves_step_ticks_are_whole_steps(last: int) -> None:
    steps = [{"step": s, "loss": 1.0 / s, "reward/sft": 0.1 * s, "reward_accuracy/pairwise": 0.5}
             for s in range(1, last + 1)]
    figure = curves_figure(steps, {"eval/loss": 0.5})
    figure.canvas.draw()
    for ax in figure.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
