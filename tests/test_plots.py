"""`uftdata.plots` and `uftdata inspect --plot`: what each figure draws (counted from its artists),
the PNG bytes (reproducible, written atomically), and the command on a small mixture."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.container import BarContainer
from matplotlib.patches import StepPatch
from test_mix import pair_rows, sft_rows, write

from uftdata.cli import app
from uftdata.figures import moving_mean, save_png
from uftdata.inspect import inspect_with_stats
from uftdata.mixout import build_mixtures
from uftdata.mixspec import spec_from_options
from uftdata.plots import SCORE_EDGES, lengths_figure, plot_lengths, plot_scores, scores_figure
from uftdata.rejects import Rejects

PNG = b"\x89PNG\r\n\x1a\n"


def stats_frame(rows: list[tuple[str, str, str, float, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"split": pl.String, "source": pl.String, "kind": pl.String,
                                      "score": pl.Float32, "prompt_chars": pl.Int64, "completion_chars": pl.Int64},
                        orient="row")


@pytest.fixture
def stats() -> pl.DataFrame:
    """sft rows of one source, score rows of two sources (one in the test split), a pair."""
    return stats_frame(
        [("train", "ultrachat", "sft", 1.0, 40 + i, 300 + i) for i in range(6)]
        + [("train", "helpsteer2", "score", s, 120, 80) for s in (0.0, 0.5, 0.52, 0.97, 1.0)]
        + [("test", "helpsteer2", "score", 0.5, 110, 90), ("train", "uf", "score", 0.25, 60, 70)]
        + [("train", "hh", "pairwise", 1.0, 30, 50), ("train", "hh", "pairwise", 0.0, 30, 55)])


def bars(ax) -> list[BarContainer]:  # noqa: ANN001
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_scores_one_panel_per_kind_bars_stacked_by_source(stats: pl.DataFrame) -> None:
    figure = scores_figure(stats)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["sft: 6 rows", "score: 7 rows", "pairwise: 2 rows"]  # schema order
    assert all(ax.get_xlabel() == "score" and ax.get_ylabel() == "rows" for ax in axes)
    assert all(ax.get_xlim() == (0.0, 1.0) for ax in axes)
    assert figure.get_suptitle() == "Score distribution by kind (test 1, train 14 rows)"

    score = axes[1]
    containers = bars(score)
    assert [c.get_label() for c in containers] == ["helpsteer2 (6)", "uf (1)"]
    assert all(len(c) == len(SCORE_EDGES) - 1 == 20 for c in containers)  # bins of 0.05
    heights = np.array([[bar.get_height() for bar in c] for c in containers])
    assert heights.sum() == 7
    # Bins [lo, lo + 0.05); the last one holds 1.0. The uf bar sits on top of helpsteer2's.
    expected = np.zeros(20)
    for s in (0.0, 0.5, 0.52, 0.97, 1.0, 0.5):
        expected[min(int(s / 0.05 + 1e-9), 19)] += 1
    assert heights[0].tolist() == expected.tolist()
    assert heights[1][5] == 1 and containers[1][5].get_y() == 0  # 0.25: bin 5, nothing under it
    assert containers[1][10].get_y() == 3  # stacked: on helpsteer2's 0.5, 0.5 (test) and 0.52
    assert [t.get_text() for t in score.get_legend().get_texts()] == ["helpsteer2 (6)", "uf (1)"]
    assert sum(bar.get_height() for c in bars(axes[0]) for bar in c) == 6
    assert bars(axes[0])[0][19].get_height() == 6


def test_lengths_one_line_per_source_and_kind(stats: pl.DataFrame) -> None:
    figure = lengths_figure(stats)
    prompt, completion = figure.axes
    assert prompt.get_xlabel() == "prompt characters" and completion.get_xlabel() == "completion characters"
    assert prompt.get_ylabel() == completion.get_ylabel() == "rows"
    assert prompt.get_title() == "prompt: median 45, p95 120, max 120"
    for ax in (prompt, completion):
        steps = [p for p in ax.patches if isinstance(p, StepPatch)]
        assert [s.get_label() for s in steps] == ["helpsteer2 / score (6)", "hh / pairwise (2)",
                                                  "uf / score (1)", "ultrachat / sft (6)"]
        assert [int(s.get_data().values.sum()) for s in steps] == [6, 2, 1, 6]  # every row in a bin
        assert ax.get_xscale() == "linear"
    assert [t.get_text() for t in completion.get_legend().get_texts()][0] == "helpsteer2 / score (6)"


def test_lengths_with_a_long_tail_use_a_log_axis(stats: pl.DataFrame) -> None:
    tail = pl.concat([stats, stats_frame([("train", "uf", "score", 0.5, 50_000, 80)])])
    prompt, completion = lengths_figure(tail).axes
    assert prompt.get_xscale() == "log" and prompt.get_xlabel() == "prompt characters (log scale)"
    assert completion.get_xscale() == "linear"
    values = {s.get_label(): s.get_data().values.sum() for s in prompt.patches if isinstance(s, StepPatch)}
    assert values["uf / score (2)"] == 2  # the longest row is inside the last bin


def test_no_rows_gives_figures_that_say_so(tmp_path: Path) -> None:
    empty = pl.DataFrame()
    for figure in (scores_figure(empty), lengths_figure(empty)):
        texts = [t.get_text() for ax in figure.axes for t in ax.texts]
        assert texts and all(t == "no data\nno rows" for t in texts)
    assert plot_scores(empty, tmp_path / "s.png").read_bytes().startswith(PNG)


def test_png_is_reproducible_and_written_atomically(stats: pl.DataFrame, tmp_path: Path) -> None:
    first = plot_scores(stats, tmp_path / "a" / "scores.png")
    second = plot_scores(stats, tmp_path / "b" / "scores.png")
    assert first == tmp_path / "a" / "scores.png"
    data = first.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    assert second.read_bytes() == data  # no date or version in the file; Agg draws the same pixels
    assert b"Software" not in data
    lengths = plot_lengths(stats, tmp_path / "a" / "lengths.png")
    assert lengths.read_bytes() == plot_lengths(stats, tmp_path / "b" / "lengths.png").read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["lengths.png", "scores.png"]  # no leftovers

    # A failed drawing leaves the previous file in place.
    figure = scores_figure(stats)
    figure.savefig = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        save_png(figure, first)
    assert first.read_bytes() == data and sorted(p.name for p in (tmp_path / "a").iterdir()) == ["lengths.png", "scores.png"]


def test_moving_mean() -> None:
    assert moving_mean([1, 2, 3, 4, 5], 2).tolist() == [1.0, 1.5, 2.5, 3.5, 4.5]
    assert moving_mean([4.0], 3).tolist() == [4.0] and moving_mean([], 3).tolist() == []


# --- the command on a mixture -----------------------------------------------------------------------

@pytest.fixture
def mixture(tmp_path: Path) -> Path:
    a = write(tmp_path / "a.parquet", sft_rows(40, "a"), "a")
    b = write(tmp_path / "b.parquet", pair_rows(10, "b"), "b")
    spec = spec_from_options([f"{a}=all", f"{b}=all"], [f"{a}=0.2"], seed=0, total=None, sweep=None, on_short="error")
    build_mixtures(spec, tmp_path / "mix", Rejects.raising())
    return tmp_path / "mix"


def run_cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        app(list(args), standalone_mode=False)
    return out.getvalue()


def test_inspect_with_stats_keeps_one_row_per_data_row(mixture: Path) -> None:
    report, stats = inspect_with_stats(mixture)
    assert stats.height == report["rows"] == 60
    assert {"split", "source", "kind", "score", "prompt_chars", "completion_chars"} <= set(stats.columns)
    by_split: dict[str, int] = {}
    for count in report["counts"]:
        by_split[count["split"]] = by_split.get(count["split"], 0) + count["len"]
    assert dict(stats.group_by("split").len().iter_rows()) == by_split and set(by_split) == {"train", "test"}


def test_inspect_plot_writes_both_figures_and_prints_their_paths(mixture: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    lines = run_cli("inspect", str(mixture), "--plot", str(out)).splitlines()
    assert lines[-2:] == [f"plot: {out / 'scores.png'}", f"plot: {out / 'lengths.png'}"]
    assert "schema: valid" in lines
    for name in ("scores.png", "lengths.png"):
        assert (out / name).read_bytes().startswith(PNG) and (out / name).stat().st_size > 10_000
    _, stats = inspect_with_stats(mixture)
    assert (out / "scores.png").read_bytes() == plot_scores(stats, tmp_path / "again.png").read_bytes()

    report = json.loads(run_cli("inspect", str(mixture), "--json", "--plot", str(tmp_path / "j")))
    assert report["plots"] == [str(tmp_path / "j" / "scores.png"), str(tmp_path / "j" / "lengths.png")]
