"""The breaker on pybreaker under asyncio: counted failures, fast-fail, bounded probes, close."""

from __future__ import annotations

import asyncio

import pytest

from gateway.breaker import BreakerConfig, BreakerOpenError, CircuitBreaker

pytestmark = pytest.mark.anyio


class Sick(Exception):
    pass


class Business(Exception):
    pass


@pytest.fixture
def anyio_backend():
    return "asyncio"


class MonotonicClock:
    """An injected monotonic clock: tests move ``now`` by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
