"""The fakes every tier shares: injected clocks that tests move by hand.

Three clocks, one shape: call it for the time, ``advance()`` to move it (``now`` may also be
set directly). Code under test takes them where it would take ``time.monotonic``,
``time.time`` or a ``now()`` returning a datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# The tests' "now": a Sunday morning during a driver's day.
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


class MonotonicClock:
    """Seconds that only move forward, like ``time.monotonic`` (the origin means nothing)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class WallClock:
    """Epoch seconds, like ``time.time``; starts at :data:`NOW`."""

    def __init__(self, start: datetime = NOW) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class DatetimeClock:
    """An aware datetime, like ``datetime.now(UTC)``; starts at :data:`NOW`."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class FakeSleep:
    """An injected ``asyncio.sleep``: records each delay and moves ``clock`` past it."""

    def __init__(self, clock: MonotonicClock) -> None:
        self.clock, self.slept = clock, []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(seconds)
