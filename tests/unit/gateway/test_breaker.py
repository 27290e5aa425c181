"""The breaker on pybreaker under asyncio: counted failures, fast-fail, bounded probes, close."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.resilience.breaker import (
    DEFAULT_EVENTS_KEPT,
    BreakerCall,
    BreakerConfig,
    BreakerOpenError,
    BreakerState,
    CircuitBreaker,
    ProbeStillRunningError,
)
from shared_contracts.identity import Role
from tests.fakes import MonotonicClock, WallClock

pytestmark = pytest.mark.anyio


class Sick(Exception):
    pass


class Business(Exception):
    pass


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def mono() -> MonotonicClock:
    return MonotonicClock()


def breaker(mono, **kw) -> CircuitBreaker:
    config = BreakerConfig(**{"fail_max": 3, "reset_timeout_seconds": 10, **kw})
    return CircuitBreaker(
        "loads", config, clock=mono, is_failure=lambda exc: not isinstance(exc, Business)
    )


async def call(cb: CircuitBreaker, outcome: BaseException | None = None) -> str:
    async with cb.calling():
        await asyncio.sleep(0)
        if outcome is not None:
            raise outcome
    return "ok"


async def test_awaited_failures_are_counted_and_open_the_breaker(mono):
    cb = breaker(mono)
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    assert cb.state == "open"
    assert cb.transitions == {"closed->open": 1}


async def test_open_breaker_fails_fast_without_calling(mono):
    cb = breaker(mono)
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    attempted = False

    async def guarded() -> None:
        nonlocal attempted
        async with cb.calling():
            attempted = True

    mono.now += 9.9
    with pytest.raises(BreakerOpenError, match="loads is open"):
        await guarded()
    assert attempted is False


async def test_business_errors_do_not_trip_it(mono):
    cb = breaker(mono)
    for _ in range(10):
        with pytest.raises(Business):
            await call(cb, Business())
    assert cb.state == "closed"


async def test_half_open_admits_bounded_probes_and_closes_on_success(mono):
    cb = breaker(mono, half_open_max_calls=1)
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    mono.now += 10
    release = asyncio.Event()
    reached = 0

    async def probe() -> str:
        nonlocal reached
        async with cb.calling():
            reached += 1
            await release.wait()
        return "ok"

    first = asyncio.create_task(probe())
    await asyncio.sleep(0)
    # While the one probe is in flight, every other request still fails fast.
    for _ in range(5):
        with pytest.raises(BreakerOpenError, match="half-open"):
            await probe()
    release.set()
    assert await first == "ok"
    assert reached == 1 and cb.state == "closed"
    assert cb.transitions == {"closed->open": 1, "open->half-open": 1, "half-open->closed": 1}


async def test_failed_probe_opens_it_again_for_another_timeout(mono):
    cb = breaker(mono)
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    mono.now += 10
    with pytest.raises(Sick):
        await call(cb, Sick())
    assert cb.state == "open"
    mono.now += 5
    with pytest.raises(BreakerOpenError):
        await call(cb)
    mono.now += 5
    assert await call(cb) == "ok" and cb.state == "closed"


async def test_slow_successes_count_as_failures_but_keep_their_answer(mono):
    cb = breaker(mono, slow_call_seconds=1.0)

    async def slow() -> str:
        async with cb.calling():
            mono.now += 2
        return "answer"

    for _ in range(3):
        assert await slow() == "answer"
    assert cb.state == "open"


def test_invalid_settings_are_refused_at_start_up():
    with pytest.raises(ValueError):
        BreakerConfig(fail_max=0)
    with pytest.raises(ValueError):
        BreakerConfig(reset_timeout_seconds=-1)
    with pytest.raises(ValueError):
        BreakerConfig(half_open_max_calls=0)


async def test_state_changes_are_reported(mono):
    seen = []
    cb = CircuitBreaker(
        "nav", BreakerConfig(fail_max=1), clock=mono, on_transition=lambda *t: seen.append(t)
    )
    with pytest.raises(Sick):
        await call(cb, Sick())
    assert seen == [("nav", "closed", "open")]
    assert cb.snapshot().state == "open"


# --- the state model: states, permissions, recorded events ---------------------------


async def test_state_is_an_enum_that_reads_as_pybreakers_names(mono):
    cb = breaker(mono)
    assert cb.state is BreakerState.CLOSED and cb.state == "closed"
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    assert cb.state is BreakerState.OPEN


def test_permission_success_and_error_as_explicit_steps(mono):
    # GIVEN a breaker driven without the context manager, one step at a time
    cb = breaker(mono, half_open_max_calls=1)
    for _ in range(3):
        attempt = BreakerCall(cb)
        cb.try_acquire_permission(attempt)
        assert attempt.probe is False
        cb.on_error(attempt, Sick())
    # THEN it is open, and refuses permission until its reset timeout on the clock
    assert cb.state is BreakerState.OPEN
    with pytest.raises(BreakerOpenError, match="is open"):
        cb.try_acquire_permission(BreakerCall(cb))
    mono.now += 10
    probe = BreakerCall(cb)
    cb.try_acquire_permission(probe)
    assert probe.probe is True and cb.state is BreakerState.HALF_OPEN
    assert cb.probes_in_flight == 1
    with pytest.raises(BreakerOpenError, match="is half-open"):
        cb.try_acquire_permission(BreakerCall(cb))
    # WHEN the probe succeeds THEN it closes and frees the probe slot
    cb.on_success(probe)
    assert cb.state is BreakerState.CLOSED and cb.probes_in_flight == 0


async def test_transitions_are_recorded_as_events_with_time_and_reason(mono, caplog):
    cb = breaker(mono)
    for _ in range(3):
        with pytest.raises(Sick):
            await call(cb, Sick())
    opened_at = mono.now
    mono.now += 10
    with pytest.raises(Sick):
        await call(cb, Sick())  # the probe fails: open again
    mono.now += 10
    assert await call(cb) == "ok"
    events = list(cb.events.recent)
    assert [(e.from_state, e.to_state) for e in events] == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]
    assert [e.at for e in events] == [opened_at, opened_at + 10, opened_at + 10] + [
        opened_at + 20
    ] * 2
    assert events[0].reason == "3 failures in a row (last: Sick)"
    assert events[2].reason == "the probe failed (Sick)"
    assert events[4].reason == "the probe succeeded"
    assert cb.transitions == {
        "closed->open": 1,
        "open->half-open": 2,
        "half-open->open": 1,
        "half-open->closed": 1,
    }
    assert "breaker loads: closed -> open (3 failures in a row (last: Sick))" in caplog.text
    # AND the operator's view lists them with their age on the breaker's clock
    mono.now += 5
    snap = cb.snapshot()
    assert snap.events[-1] == {
        "from": "half-open",
        "to": "closed",
        "reason": "the probe succeeded",
        "seconds_ago": 5.0,
    }
    assert (snap.calls, snap.failures) == (5, 4)


async def test_only_the_newest_events_are_kept_but_every_transition_is_counted(mono):
    cb = breaker(mono, fail_max=1)
    for _ in range(DEFAULT_EVENTS_KEPT):  # each round: open, half-open, open
        with pytest.raises(Sick):
            await call(cb, Sick())
        mono.now += 10
    assert len(cb.events.recent) == DEFAULT_EVENTS_KEPT
    assert sum(cb.transitions.values()) == 2 * DEFAULT_EVENTS_KEPT - 1


async def test_patience_answers_a_fast_trial_and_lets_a_slow_one_run_on(mono):
    cb = breaker(mono, probe_patience_seconds=0.01)
    assert await cb.patiently(asyncio.sleep(0, result="live")) == "live"
    release = asyncio.Event()

    async def slow_trial() -> str:
        await release.wait()
        return "late"

    with pytest.raises(ProbeStillRunningError) as caught:
        await cb.patiently(slow_trial())
    # the trial was not cancelled: it runs on, and its outcome can still be awaited
    assert not caught.value.trial.done()
    release.set()
    assert await caught.value.outcome() == "late"


def test_ops_status_shows_the_breakers_events(gateway, upstream, bearer):
    # GIVEN loads is unreachable until its breaker opens
    upstream.get("http://loads.test/loads").mock(side_effect=httpx.ConnectError("refused"))
    for _ in range(5):
        gateway.get("/loads", headers=bearer())
    # WHEN an operator looks
    status = gateway.get("/ops/status", headers=bearer(Role.OPS, None)).json()
    # THEN the breaker's state, counts and the transition with its reason are there
    loads = status["modules"]["loads"]["breaker"]
    assert loads["state"] == "open" and loads["transitions"] == {"closed->open": 1}
    (event,) = loads["events"]
    assert (event["from"], event["to"]) == ("closed", "open")
    assert event["reason"] == "5 failures in a row (last: ConnectError)"
    assert loads["failures"] == 5 and event["seconds_ago"] >= 0


async def test_a_trial_caller_with_no_fallback_answer_waits_for_the_trials_outcome(
    settings, upstream, monkeypatch
):
    from tests.unit.gateway.test_resilience import Harness

    # GIVEN a driver with no cached copy, and loads' breaker opened by a refusing module
    h = Harness(
        MonotonicClock(),
        WallClock(),
        settings,
        {
            "loads": {
                "retry": {"max_attempts": 1},
                "timeout_seconds": 0.5,
                "breaker": {"probe_patience_seconds": 0.01},
            }
        },
    )
    route = upstream.get("http://loads.test/loads").mock(side_effect=httpx.ConnectError("down"))
    for _ in range(5):
        assert (await h.client.get("/loads", headers=h.auth())).status_code == 503
    breaker = h.upstreams["loads"].breaker
    assert breaker.state is BreakerState.OPEN

    # The module answers only once the caller's probe patience is over, if it waits with
    # one (it must not: it has no fallback answer); else as soon as the trial reaches it.
    reached, answer, patient = asyncio.Event(), asyncio.Event(), []
    patiently = breaker.patiently

    async def watched(attempt):
        patient.append(attempt)
        try:
            return await patiently(attempt)
        finally:
            answer.set()

    monkeypatch.setattr(breaker, "patiently", watched)

    async def recovered_but_slower_than_the_patience(request):
        reached.set()
        await answer.wait()
        return httpx.Response(200, json={"items": []})

    route.mock(side_effect=recovered_but_slower_than_the_patience)
    h.mono.now += 11  # past the reset timeout: the next call is the half-open trial
    # WHEN the trial's caller asks: its fallback has no copy to answer from
    asking = asyncio.create_task(h.client.get("/loads", headers=h.auth()))
    await reached.wait()
    if not patient:
        answer.set()
    r = await asking
    # THEN it waited for the trial (not a 503 at the patience): the live answer, and closed
    assert r.status_code == 200 and "relay-degraded" not in r.headers
    assert breaker.state is BreakerState.CLOSED and route.call_count == 6
