"""ReleaseController on a simulated fleet: simulated time, in-memory stores, no sleeping."""

from __future__ import annotations

import itertools
from dataclasses import replace

from gateway.release.state import Release
from relay.release.controller import Progress, ReleaseController
from relay.release.policy import Policy

from .fakes import T0, Behaviour, Fleet

POLICY = Policy(interval_seconds=60, min_calls=50)
RELEASE = Release(
    module="message",
    release_id="r-42",
    stable_version="v1",
    canary_version="v2",
    canary_url="http://127.0.0.1:9104",
)


def controller(fleet: Fleet, policy: Policy = POLICY, **kwargs) -> ReleaseController:
    return ReleaseController(
        fleet.releases, fleet.stats, policy, clock=fleet.clock, sleep=fleet.sleep, **kwargs
    )


def written(fleet: Fleet) -> list[tuple[float, str, str]]:
    return [(r.weight, r.phase, r.updated_by) for _, r in fleet.releases.puts]


def test_a_good_version_is_promoted_through_every_step_in_order() -> None:
    fleet = Fleet()
    seen: list[Progress] = []

    outcome = controller(fleet, on_progress=seen.append).run(RELEASE)

    assert outcome.promoted, outcome.reason
    assert written(fleet) == [
        (1.0, "running", "relay deploy"),
        (10.0, "running", "relay deploy"),
        (50.0, "running", "relay deploy"),
        (0.0, "promoted", "relay deploy"),  # the 100% step: the canary is the stable one
    ]
    final = fleet.releases.get("message")
    assert final is not None
    assert (final.stable_version, final.stable_url) == ("v2", "http://127.0.0.1:9104")
    assert [e["verdict"] for e in final.evidence] == ["pass"] * 3
    assert [e["weight"] for e in final.evidence] == [1.0, 10.0, 50.0]
    # every verdict compared both versions over the same seconds
    assert {e["baseline_source"] for e in final.evidence} == {"same interval"}
    # Each step lasted one interval (plus the stats' lag), no more.
    times = [t for t, _ in fleet.releases.puts]
    assert all(60 <= b - a <= 64 for a, b in itertools.pairwise(times))
    assert [j.verdict.kind for j in outcome.judgements] == ["pass"] * 3
    # Progress came at every tick, and no tick slept longer than the policy's tick.
    assert {p.step for p in seen} == {0, 1, 2}
    assert max(fleet.sleeps) <= POLICY.tick_seconds


def test_a_version_with_30_percent_500s_is_rolled_back_within_an_interval() -> None:
    # 1000 calls a second: 10 a second on the canary at 1%, 3 of them 500s.
    fleet = Fleet(calls_per_second=1000, canary=lambda _s: Behaviour(failure_rate=0.3))

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    assert "drop 30.0 points > 1.0" in outcome.reason
    last_time, last = fleet.releases.puts[-1]
    assert (last.weight, last.phase) == (0.0, "rolled-back")
    assert [r.weight for _, r in fleet.releases.puts] == [1.0, 0.0]
    assert fleet.canary_bad_since is not None
    assert last_time - fleet.canary_bad_since <= POLICY.interval_seconds
    assert last.evidence[-1]["verdict"] == "fail"
    assert last.evidence[-1]["canary"]["failures"] > 0


def test_a_version_that_goes_bad_mid_step_is_rolled_back_seconds_later() -> None:
    # Good through 1% and 10%; at 50% it starts failing 30 s into the step.
    bad_from = T0 + 2 * 62 + 30
    fleet = Fleet(canary=lambda s: Behaviour(failure_rate=0.3 if s >= bad_from else 0.0))

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    last_time, _ = fleet.releases.puts[-1]
    assert [r.weight for _, r in fleet.releases.puts] == [1.0, 10.0, 50.0, 0.0]
    assert fleet.canary_bad_since is not None
    assert 0 < last_time - fleet.canary_bad_since <= POLICY.interval_seconds
    assert last_time - fleet.canary_bad_since <= 10  # a few ticks, not a whole interval


def test_a_3x_slower_version_is_rolled_back_on_p99() -> None:
    fleet = Fleet(canary=lambda _s: Behaviour(latency_ms=600), stable=Behaviour(latency_ms=200))

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    assert "p99" in outcome.reason
    assert fleet.releases.puts[-1][1].phase == "rolled-back"


def test_a_quiet_canary_is_rolled_back_after_max_quiet_intervals() -> None:
    # 20 calls a second: 1% is 0.2 calls, rounded to none; the canary is never judged.
    fleet = Fleet(calls_per_second=20)
    policy = Policy(interval_seconds=60, max_quiet_intervals=3)

    outcome = controller(fleet, policy).run(RELEASE)

    assert not outcome.promoted
    assert outcome.reason.startswith("not enough traffic to judge after 3 intervals")
    (start, _), (end, last) = fleet.releases.puts
    assert last.phase == "rolled-back"
    assert 3 * 60 <= end - start <= 3 * 60 + 5
    assert last.evidence[-1]["verdict"] == "fail"


def test_a_slow_trickle_is_judged_once_it_adds_up() -> None:
    # 1% of 100 calls a second is one canary call a second: 50 calls take 50 s, the first
    # interval judges it.
    fleet = Fleet(calls_per_second=100)

    outcome = controller(
        fleet, Policy(interval_seconds=30, min_calls=50, min_latency_calls=50)
    ).run(RELEASE)

    assert outcome.promoted, outcome.reason
    first = fleet.releases.puts[1][0] - fleet.releases.puts[0][0]
    assert 60 <= first <= 64  # two 30 s intervals at 1%


def test_a_pass_waits_until_the_p99_rests_on_enough_calls() -> None:
    # 50 calls are enough to judge success, but a p99 of 50 calls is their slowest one:
    # the step goes on until both versions have min_latency_calls (100 s at 1 call/s).
    fleet = Fleet(calls_per_second=100)

    outcome = controller(
        fleet, Policy(interval_seconds=30, min_calls=50, min_latency_calls=100)
    ).run(RELEASE)

    assert outcome.promoted, outcome.reason
    first = fleet.releases.puts[1][0] - fleet.releases.puts[0][0]
    assert 120 <= first <= 124  # four 30 s intervals at 1%


def test_a_restarted_controller_resumes_at_the_stored_step() -> None:
    fleet = Fleet()
    running = replace(
        RELEASE, step=2, weight=50.0, started_at=T0 - 200, updated_at=T0 - 5, revision=3
    )
    fleet.releases.items["message"] = running

    outcome = controller(fleet, actor="relay deploy (restarted)").run(RELEASE)

    assert outcome.promoted, outcome.reason
    assert written(fleet) == [(0.0, "promoted", "relay deploy (restarted)")]
    final = fleet.releases.get("message")
    assert final is not None and final.started_at == T0 - 200


def test_a_resumed_100_percent_step_reads_its_baseline_back_from_the_evidence() -> None:
    fleet = Fleet()
    # Stable's traffic in the 50% step, before the restart.
    for second in range(int(T0) - 100, int(T0) - 40):
        fleet._add(RELEASE, "v1", 100, Behaviour(latency_ms=200), second)
    earlier = {"window": [T0 - 100, T0 - 40], "stable": {"calls": 6000}, "verdict": "pass"}
    fleet.releases.items["message"] = replace(
        RELEASE, step=3, weight=100.0, updated_at=T0, revision=4, evidence=(earlier,)
    )
    fleet.canary = lambda _s: Behaviour(latency_ms=600)

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    assert "p99" in outcome.reason
    assert "baseline: stable's earlier window (6000 calls)" in outcome.reason


def test_another_writer_stops_the_controller() -> None:
    fleet = Fleet()
    operator = ReleaseController(fleet.releases, fleet.stats, POLICY, clock=fleet.clock)
    fleet.at[T0 + 70] = lambda: operator.rollback("message", "pager: message 5xx", "ops-alice")

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    assert outcome.changed_by == "ops-alice"
    assert outcome.reason.startswith("changed by ops-alice")
    assert written(fleet) == [
        (1.0, "running", "relay deploy"),
        (10.0, "running", "relay deploy"),
        (0.0, "rolled-back", "ops-alice"),
    ]
    final = fleet.releases.get("message")
    assert final is not None
    assert final.evidence[-1]["reasons"] == ["pager: message 5xx"]
    assert fleet.now < T0 + 80  # it noticed at the next tick


def test_a_write_that_loses_the_race_stops_the_controller() -> None:
    fleet = Fleet()
    sneaky: list[Release] = []

    def other_writer(_ours: Release) -> None:
        current = fleet.releases.get("message")
        assert current is not None
        stored = fleet.releases.put(
            replace(current, updated_by="other controller"), expected_revision=current.revision
        )
        assert stored is not None
        sneaky.append(stored)

    run = controller(fleet)
    fleet.at[T0 + 30] = lambda: setattr(fleet.releases, "before_put", other_writer)

    outcome = run.run(RELEASE)

    assert not outcome.promoted
    assert outcome.changed_by == "other controller"
    assert fleet.releases.get("message") == sneaky[0]
    assert [r.updated_by for _, r in fleet.releases.puts] == ["relay deploy", "other controller"]


def test_a_module_with_another_release_running_is_left_alone() -> None:
    fleet = Fleet()
    other = replace(RELEASE, release_id="r-41", weight=10.0, updated_by="bob", revision=2)
    fleet.releases.items["message"] = other

    outcome = controller(fleet).run(RELEASE)

    assert not outcome.promoted
    assert "already has release r-41 running (by bob)" in outcome.reason
    assert fleet.releases.puts == []


def test_a_finished_earlier_release_is_replaced() -> None:
    fleet = Fleet()
    fleet.releases.items["message"] = replace(
        RELEASE, release_id="r-41", phase="promoted", revision=7
    )

    outcome = controller(fleet).run(RELEASE)

    assert outcome.promoted
    assert fleet.releases.puts[0][1].revision == 8
    assert fleet.releases.puts[0][1].release_id == "r-42"


def test_rollback_of_nothing_running_returns_none() -> None:
    fleet = Fleet()

    assert controller(fleet).rollback("message", "why not", "ops") is None


def test_a_release_resumed_long_after_its_controller_stopped_is_judged_on_fresh_calls() -> None:
    # The step started an hour before the resume: its first interval is long over, with
    # no traffic in it; the resumed controller judges the calls from the last interval on.
    fleet = Fleet()
    running = replace(RELEASE, step=2, weight=50.0, updated_at=T0 - 3600, revision=3)
    fleet.releases.items["message"] = running

    outcome = controller(fleet).run(RELEASE)

    assert outcome.promoted, outcome.reason
    (judged,) = outcome.judgements
    assert judged.window_start >= T0 - POLICY.interval_seconds
