"""judge(): a canary against the stable version over the same window."""

from __future__ import annotations

import json

import pytest

from gateway.release.stats import VersionStats, bucket
from relay.release.analysis import judge
from relay.release.policy import Policy

POLICY = Policy()


def stats(calls: int, failures: int = 0, ms: float = 20.0, slow: int = 0, slow_ms: float = 0.0):
    histogram = {bucket(ms): calls - slow}
    if slow:
        histogram[bucket(slow_ms)] = histogram.get(bucket(slow_ms), 0) + slow
    return VersionStats(calls, failures, histogram)


def test_30_percent_500s_fails_on_success_rate() -> None:
    verdict = judge(stats(100, failures=30), stats(900), POLICY)

    assert verdict.kind == "fail"
    assert verdict.reasons[0] == "success 70.0% vs stable 100.0% (drop 30.0 points > 1.0)"
    assert any("below the floor 95.0%" in r for r in verdict.reasons)
    assert verdict.baseline_source == "same interval"


def test_a_small_drop_above_the_floor_fails_against_the_baseline() -> None:
    # 97% is above the 95% floor but 3 points below a stable at 100%.
    verdict = judge(stats(100, failures=3), stats(900), POLICY)

    assert verdict.kind == "fail"
    assert verdict.reasons == ("success 97.0% vs stable 100.0% (drop 3.0 points > 1.0)",)


def test_a_drop_within_the_allowance_passes() -> None:
    # Both versions lose calls to the same dependency: the canary is no worse.
    verdict = judge(stats(200, failures=8), stats(1000, failures=35), POLICY)

    assert verdict.kind == "pass"


def test_3x_slower_p99_fails_on_latency() -> None:
    verdict = judge(stats(100, ms=600), stats(900, ms=200), POLICY)

    assert verdict.kind == "fail"
    (reason,) = verdict.reasons
    assert reason.startswith("p99 ")
    assert "vs stable" in reason
    assert "x > 1.5x)" in reason
    assert verdict.canary.p99_ms is not None and verdict.baseline is not None
    assert verdict.baseline.p99_ms is not None
    assert verdict.canary.p99_ms > 2.5 * verdict.baseline.p99_ms


def test_a_slower_p99_within_the_minimum_delta_passes() -> None:
    # 2 ms -> 6 ms is 3x but only about 4 ms slower: not a regression worth a rollback.
    verdict = judge(stats(100, ms=6), stats(900, ms=2), POLICY)

    assert verdict.kind == "pass"


def test_equal_versions_pass_with_both_numbers_in_the_reasons() -> None:
    verdict = judge(stats(100), stats(900), POLICY)

    assert verdict.kind == "pass"
    assert verdict.reasons[0] == "success 100.0% vs stable 100.0%"
    assert verdict.reasons[1].startswith("p99 ")


def test_a_pass_waits_for_the_end_of_the_interval_but_a_fail_does_not() -> None:
    good = judge(stats(100), stats(900), POLICY, final=False)
    bad = judge(stats(100, failures=30), stats(900), POLICY, final=False)

    assert good.kind == "wait"
    assert bad.kind == "fail"


@pytest.mark.parametrize(("canary", "stable"), [(49, 900), (100, 49), (0, 0)])
def test_too_few_calls_on_either_side_waits(canary: int, stable: int) -> None:
    verdict = judge(
        stats(canary) if canary else VersionStats(),
        stats(stable) if stable else VersionStats(),
        POLICY,
    )

    assert verdict.kind == "wait"
    assert verdict.reasons == (
        f"too few calls to judge: canary {canary}, stable {stable} (need 50 each)",
    )


def test_a_canary_below_the_floor_fails_even_with_no_baseline() -> None:
    verdict = judge(stats(100, failures=30), VersionStats(), POLICY)

    assert verdict.kind == "fail"
    assert verdict.baseline is None
    assert "no stable baseline with enough calls" in verdict.reasons


def test_at_100_percent_the_baseline_is_stables_earlier_window() -> None:
    earlier = stats(500, ms=200)

    slow = judge(stats(1000, ms=600), VersionStats(), POLICY, earlier_stable=earlier)
    same = judge(stats(1000, ms=200), VersionStats(), POLICY, earlier_stable=earlier)

    assert slow.kind == "fail"
    assert same.kind == "pass"
    assert same.baseline_source == "earlier interval"
    assert same.stable.calls == 0
    assert same.baseline is not None and same.baseline.calls == 500
    assert "baseline: stable's earlier window (500 calls)" in same.reasons
    evidence = same.as_evidence()
    assert evidence["baseline_source"] == "earlier interval"
    assert evidence["baseline"]["calls"] == 500


def test_a_same_interval_baseline_is_preferred_over_an_earlier_one() -> None:
    verdict = judge(stats(100, ms=600), stats(900, ms=600), POLICY, earlier_stable=stats(500))

    assert verdict.kind == "pass"
    assert verdict.baseline_source == "same interval"


def test_evidence_is_json() -> None:
    verdict = judge(stats(100, failures=30), stats(900), POLICY)

    evidence = json.loads(json.dumps(verdict.as_evidence()))

    assert evidence["verdict"] == "fail"
    assert evidence["canary"] == {
        "calls": 100,
        "failures": 30,
        "success_rate": pytest.approx(0.7),
        "p99_ms": verdict.canary.p99_ms,
    }
    assert evidence["stable"]["calls"] == 900


def test_a_p99_of_too_few_calls_is_not_judged_and_a_pass_waits_for_enough() -> None:
    # 60 calls with one cold-start call: their p99 is that one call, not the version
    cold = stats(60, ms=20, slow=1, slow_ms=400)

    early = judge(cold, stats(900), POLICY, final=False)
    at_the_end = judge(cold, stats(900), POLICY)
    enough = judge(stats(100, ms=600), stats(900, ms=200), POLICY, final=False)

    assert early.kind == "wait" and at_the_end.kind == "wait"
    assert at_the_end.reasons[0].startswith("too few calls to judge p99: canary 60")
    assert enough.kind == "fail"  # with min_latency_calls each, a slow canary fails early
