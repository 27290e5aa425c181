"""Policy: named defaults, a derived tick, and settings refused at construction."""

from __future__ import annotations

import pytest

from relay.release.policy import MIN_TICK_SECONDS, Policy, PolicyError


def test_the_defaults() -> None:
    policy = Policy()

    assert policy.steps == (1.0, 10.0, 50.0, 100.0)
    assert (policy.interval_seconds, policy.min_calls, policy.bake_seconds) == (60, 50, 300)
    assert policy.tick_seconds == 6.0  # a tenth of the interval


def test_the_tick_is_never_shorter_than_the_minimum() -> None:
    assert Policy(interval_seconds=1).tick_seconds == MIN_TICK_SECONDS
    assert Policy(interval_seconds=10, tick_seconds=0.5).tick_seconds == 0.5


def test_integer_steps_become_floats() -> None:
    assert Policy(steps=(5, 100)).steps == (5.0, 100.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": ()}, "steps must not be empty"),
        ({"steps": (0, 100)}, r"steps must be in \(0, 100\]"),
        ({"steps": (1, 150)}, r"steps must be in \(0, 100\]"),
        ({"steps": (50, 10, 100)}, "steps must increase"),
        ({"steps": (10, 10, 100)}, "steps must increase"),
        ({"steps": (1, 50)}, "the last step must be 100"),
        ({"steps": (100,)}, "steps need a weight below 100"),
        ({"min_latency_calls": 0}, "min_latency_calls must be >= 1"),
        ({"interval_seconds": 0.5}, "interval_seconds must be >= 1"),
        ({"min_calls": 0}, "min_calls must be >= 1"),
        ({"max_success_drop": 1.0}, "max_success_drop"),
        ({"max_p99_ratio": 0.9}, "max_p99_ratio"),
        ({"min_p99_delta_ms": -1}, "min_p99_delta_ms"),
        ({"min_success_rate": 1.5}, "min_success_rate"),
        ({"interval_seconds": 10, "tick_seconds": 11}, "tick_seconds"),
        ({"max_quiet_intervals": 0}, "max_quiet_intervals"),
        ({"bake_seconds": -5}, "bake_seconds"),
    ],
)
def test_a_bad_setting_is_refused_by_name(settings: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy(**settings)
