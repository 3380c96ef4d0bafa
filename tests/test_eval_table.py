"""`uft-train eval-table`: finished evaluations side by side, hand-written eval.json files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uft_train import cli
from uft_train.suites import LEADERBOARD_V2


def write_eval(folder: Path, name: str, value: float, *, suite: str = "leaderboard-v2", limit: float | None = None) -> None:
    columns = [{"label": c.label, "task": c.task, "metrics": list(c.metrics), "raw": value, "normalised": value / 2,
                "parts": {}, "shots": c.shots} for c in LEADERBOARD_V2.columns]
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps({"suite": suite, "tasks": LEADERBOARD_V2.tasks, "limit": limit,
                                                  "model": {"kind": "run", "name": name}, "columns": columns}))


def test_rows_per_model_normalised_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_eval(tmp_path / "sft" / "eval" / "leaderboard-v2", "sft", 40.0)
    write_eval(tmp_path / "uft" / "eval" / "leaderboard-v2", "uft", 50.0)
    write_eval(tmp_path / "try", "uft", 60.0, limit=10)  # an evaluation folder (-o), partial
    with pytest.raises(SystemExit) as info:
        cli.main(["eval-table", "--suite", "leaderboard-v2", str(tmp_path / "sft"), str(tmp_path / "uft"),
                  str(tmp_path / "try"), "-o", str(tmp_path / "table.md")])
    assert info.value.code == 0
    six = " | ".join
    assert (tmp_path / "table.md").read_text().splitlines() == [
        "# Open LLM Leaderboard v2 (UFT paper, Table 1)", "",
        "| model | bbh | gpqa | mmlu-pro | musr | ifeval | math-hard | average |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| sft (normalised) | {six(['20.00'] * 6)} | 20.00 |",
        f"| uft (normalised) | {six(['25.00'] * 6)} | 25.00 |",
        f"| uft (limit 10) (normalised) | {six(['30.00'] * 6)} | 30.00 |",
        f"| sft (raw) | {six(['40.00'] * 6)} | 40.00 |",
        f"| uft (raw) | {six(['50.00'] * 6)} | 50.00 |",
        f"| uft (limit 10) (raw) | {six(['60.00'] * 6)} | 60.00 |"]
    assert capsys.readouterr().out.endswith(f"uft-train eval-table: wrote {tmp_path / 'table.md'}\n")


def test_another_suite_or_a_missing_evaluation_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_eval(tmp_path / "a", "a", 1.0, suite="leaderboard-v1")
    for paths in ([tmp_path / "a"], [tmp_path / "none"]):
        with pytest.raises(SystemExit) as info:
            cli.main(["eval-table", "--suite", "leaderboard-v2", *map(str, paths)])
        assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"uft-train: error: {tmp_path / 'a' / 'eval.json'}: is an evaluation of another suite")
    assert lines[1] == (f"uft-train: error: {tmp_path / 'none'}: holds no finished leaderboard-v2 evaluation (no eval.json "
                        f"there or in eval/leaderboard-v2/). Evaluate it first: uft-train eval {tmp_path / 'none'} "
                        "--suite leaderboard-v2")
