"""The miniature's protocol as pure functions: the grids fixed by the stated rule, the selection
criterion, and the claims' paired verdicts, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from uft_miniature.claims import Claim, interval, judge, verdict
from uft_miniature.protocol import PAPER, Point, Stage, at_edge, extension, grid, pick


def _stage(name: str) -> Stage:
    return next(s for s in PAPER.stages if s.name == name)


def test_grids_are_the_papers_values_times_20() -> None:
    assert [p.lr for p in grid(_stage("sft"), {})] == [6e-05, 0.0002, 0.0006, 0.002, 0.006]
    uft = grid(_stage("uft_instruction_only"), {})
    assert len(uft) == 16 and uft[0] == Point(0.0002, 0.01) and uft[1] == Point(0.0002, 0.03)
    assert sorted({p.lr for p in uft}) == [0.0002, 0.0006, 0.0018, 0.0054]
    assert sorted(p.beta or 0.0 for p in set(uft)) == [0.01] * 4 + [0.03] * 4 + [0.1] * 4 + [0.3] * 4
    assert [p.lr for p in grid(_stage("sft_then_dpo"), {})] == [3.33333e-05, 0.0001, 0.0003, 0.0009]


def test_the_mixture_grid_is_centred_on_the_instruction_pick() -> None:
    points = grid(_stage("uft"), {"uft_instruction_only": Point(0.0018, 0.1)})
    assert points == tuple(Point(lr, 0.1) for lr in (0.0002, 0.0006, 0.0018, 0.0054, 0.0162))


def test_pick_takes_reward_then_accuracy_then_the_earlier_point() -> None:
    a, b, c = Point(1e-4), Point(3e-4), Point(9e-4)
    assert pick([a, b, c], {a: {"reward": 0.5, "accuracy": 0.1}, b: {"reward": 0.6, "accuracy": 0.0},
                            c: {"reward": 0.6, "accuracy": 0.2}}) == c
    assert pick([a, b, c], {a: {"reward": 0.6, "accuracy": 0.2}, b: {"reward": 0.6, "accuracy": 0.2},
                            c: {"reward": 0.1, "accuracy": 0.9}}) == a
    assert at_edge([a, b, c], c) and at_edge([a, b, c], a) and not at_edge([a, b, c], b)
    assert not at_edge([a], a)
    assert extension([a, b, c], c) == Point(0.0027) and extension([a, b, c], a) == Point(3.33333e-05)
    assert extension([a, b, c], b) is None


def test_point_tags_and_overrides() -> None:
    assert Point(0.0006, 0.01).tag == "lr0.0006_beta0.01"
    assert Point(6e-05).tag == "lr6e-05"
    assert Point(0.0006, 0.01).overrides() == ["optim.lr=0.0006", "loss.beta=0.01"]


def test_interval_and_verdict_hand_computed() -> None:
    mean, half = interval([0.1, 0.2, 0.3])  # sd 0.1: 4.303 * 0.1 / sqrt(3)
    assert mean == pytest.approx(0.2) and half == pytest.approx(0.248434, abs=1e-6)
    assert verdict(mean, half) == "cannot tell"
    mean, half = interval([0.10, 0.11, 0.12])  # sd 0.01
    assert half == pytest.approx(0.024843, abs=1e-6) and verdict(mean, half) == "holds"
    assert verdict(-mean, half) == "does not hold"
    assert interval([0.3])[1] == math.inf and verdict(0.3, math.inf) == "cannot tell"


def test_judge_pairs_the_same_seeds() -> None:
    runs = {"a": {"0": {"reward": 0.5, "accuracy": 0.4}, "1": {"reward": 0.6, "accuracy": 0.5}},
            "b": {"0": {"reward": 0.4, "accuracy": 0.4}, "1": {"reward": 0.45, "accuracy": 0.3}, "2": {}}}
    judged = judge(Claim("a beats b", "a", "b"), runs)
    assert judged is not None and judged["seeds"] == ["0", "1"]
    assert judged["reward"]["per_seed"] == [0.1, 0.15]
    # mean 0.125, sd 0.035355, 12.706 * 0.035355 / sqrt(2) = 0.317650
    assert judged["reward"]["half_width"] == pytest.approx(0.31765, abs=1e-5)
    assert judged["verdict"] == "cannot tell" and judged["accuracy"]["mean"] == pytest.approx(0.1)
    assert judge(Claim("c beats b", "c", "b"), runs) is None


def test_seeds_that_agree_exactly_give_a_zero_width_interval_not_none() -> None:
    """Identical per-seed differences: sd 0, half-width 0, and the claim holds (it was once read as no interval)."""
    runs = {"a": {s: {"reward": 0.6, "accuracy": 0.5} for s in "012"},
            "b": {s: {"reward": 0.5, "accuracy": 0.5} for s in "012"}}
    judged = judge(Claim("a beats b", "a", "b"), runs)
    assert judged is not None and judged["reward"]["half_width"] == 0.0 and judged["verdict"] == "holds"
