"""The benchmark's verdict logic (bench/verdicts.py) on fixed numbers: no timing here."""

from __future__ import annotations

import pytest

from bench import verdicts
from bench.verdicts import (
    FASTER,
    MET,
    MISSED,
    NOISE_THRESHOLDS,
    NOISY,
    SLOWER,
    TOO_NOISY,
    WITHIN,
    Spread,
    baseline_verdict,
    ratios,
    spread,
    too_noisy,
    verdict,
)

STEADY = spread([1000.0, 1020.0, 990.0])  # 3% spread
SHAKY = spread([1000.0, 700.0, 1100.0])  # 40% spread


def test_spread_is_median_and_range() -> None:
    s = spread([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.rounds) == (2.5, 1.0, 10.0, 4)
    assert s.relative == pytest.approx(9.0 / 2.5)


def test_spread_of_agreeing_rounds_is_zero() -> None:
    assert spread([5.0, 5.0, 5.0]).relative == 0.0
    assert spread([0.0, 0.0]).relative == 0.0


def test_spread_around_a_zero_median_is_infinite() -> None:
    assert spread([-1.0, 0.0, 1.0]).relative == float("inf")


def test_spread_needs_rounds() -> None:
    with pytest.raises(ValueError, match="no rounds"):
        spread([])


def test_spread_shows_median_range_and_rounds() -> None:
    assert spread([1.0, 2.0, 4.0]).show("{:.1f}", " ms") == "2.0 ms (1.0-4.0, 3 rounds)"
    assert spread([0.5]).as_dict()["relative_spread"] == 0.0


def test_ratios_pair_each_round_with_its_own_reference() -> None:
    assert ratios([10.0, 30.0], [5.0, 10.0]) == [2.0, 3.0]
    assert ratios([1.0], [0.0]) == [float("inf")]
    with pytest.raises(ValueError, match="2 measurements for 1 references"):
        ratios([1.0, 2.0], [1.0])


def test_too_noisy_is_strictly_above_the_threshold() -> None:
    edge = Spread(median=100.0, low=90.0, high=105.0, rounds=3)  # exactly 15%
    assert not too_noisy(edge, 0.15)
    assert too_noisy(Spread(100.0, 90.0, 105.1, 3), 0.15)
    assert too_noisy(SHAKY, NOISE_THRESHOLDS["rps"])
    assert not too_noisy(STEADY, NOISE_THRESHOLDS["rps"])


@pytest.mark.parametrize(
    ("value", "at_most", "expected"),
    [
        (1.05, True, MET),  # at most 1.10x
        (1.10, True, MET),  # the target itself is met
        (1.11, True, MISSED),
        (0.12, False, MET),  # at least 0.10x
        (0.09, False, MISSED),
    ],
)
def test_verdict_against_a_steady_reference(value: float, at_most: bool, expected: str) -> None:
    target = 1.10 if at_most else 0.10
    assert verdict(value, target, at_most=at_most, reference=STEADY, threshold=0.15) == expected


def test_a_noisy_reference_gives_no_verdict_either_way() -> None:
    for value in (0.5, 5.0):
        assert verdict(value, 1.1, at_most=True, reference=SHAKY, threshold=0.15) == TOO_NOISY
    assert TOO_NOISY not in (MET, MISSED)


def test_a_failed_further_condition_misses_on_a_steady_reference() -> None:
    assert verdict(1.0, 1.1, at_most=True, reference=STEADY, threshold=0.15, also=False) == MISSED
    # ...while a noisy reference still says nothing about the ratio.
    assert verdict(1.0, 1.1, at_most=True, reference=SHAKY, threshold=0.15, also=False) == TOO_NOISY


@pytest.mark.parametrize(
    ("after_over_before", "higher_is_better", "expected"),
    [
        (1.00, True, WITHIN),
        (0.96, True, WITHIN),
        (0.95, True, WITHIN),  # exactly 5% fewer RPS is still within 5%
        (0.94, True, SLOWER),
        (1.06, True, FASTER),
        (1.04, False, WITHIN),  # a latency 4% higher
        (1.10, False, SLOWER),  # a latency 10% higher
        (0.80, False, FASTER),
    ],
)
def test_baseline_verdict(after_over_before: float, higher_is_better: bool, expected: str) -> None:
    change = Spread(after_over_before, after_over_before - 0.01, after_over_before + 0.01, 3)
    assert baseline_verdict(change, STEADY, higher_is_better=higher_is_better) == expected


def test_baseline_verdict_is_too_noisy_when_the_before_tree_moved() -> None:
    before = spread([1000.0, 1000.0, 1120.0])  # 12% > the 10% baseline threshold
    change = Spread(0.5, 0.4, 0.6, 3)  # would be "slower"
    assert baseline_verdict(change, before) == NOISY
    assert baseline_verdict(change, before, threshold=0.2) == SLOWER


def test_every_verdict_is_distinct() -> None:
    assert len(set(verdicts.VERDICTS)) == 3
    assert len({WITHIN, SLOWER, FASTER, NOISY}) == 4


@pytest.mark.parametrize(
    ("value", "at_most", "also", "expected"),
    [
        (3.7, True, True, MET),
        (10.0, True, True, MET),
        (10.5, True, True, MISSED),
        (3.7, True, False, MISSED),
        (12.0, False, True, MET),
    ],
)
def test_a_figure_measured_once_is_met_or_missed_never_too_noisy(
    value: float, at_most: bool, also: bool, expected: str
) -> None:
    assert verdicts.once_verdict(value, 10.0, at_most=at_most, also=also) == expected
