"""Circuit breakers on pybreaker, correct under asyncio.

pybreaker counts failures, runs the closed/open/half-open state machine, excludes
business errors and notifies listeners. Its own async support is Tornado-only, and
``breaker.call(async_fn)`` would count an un-awaited coroutine as a success, so calls go
through ``breaker.calling()`` around the ``await`` instead. Two things are added here:

- the open -> half-open timeout runs on an injected clock (tests move time by hand);
- half-open admits at most ``half_open_max_calls`` concurrent probes; everything else keeps
  failing fast, so recovery of a black-holed upstream does not stall every request for a
  full timeout.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pybreaker
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("relay.gateway.breaker")

Clock = Callable[[], float]

DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT_SECONDS = 10.0
DEFAULT_HALF_OPEN_MAX_CALLS = 1
DEFAULT_SLOW_CALL_SECONDS: float | None = None
DEFAULT_PROBE_PATIENCE_SECONDS = 0.1


class BreakerConfig(BaseModel):
    """Validated at start-up: a nonsensical breaker is refused before it can mislead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_max: int = Field(default=DEFAULT_FAIL_MAX, ge=1, le=1000)
    reset_timeout_seconds: float = Field(default=DEFAULT_RESET_TIMEOUT_SECONDS, gt=0, le=3600)
    half_open_max_calls: int = Field(default=DEFAULT_HALF_OPEN_MAX_CALLS, ge=1, le=100)
    slow_call_seconds: float | None = Field(default=DEFAULT_SLOW_CALL_SECONDS, gt=0)
    # A caller whose request is the half-open probe, and who has a fallback answer, waits
    # this long for the probe before the fallback answers; the probe goes on without it.
    probe_patience_seconds: float = Field(default=DEFAULT_PROBE_PATIENCE_SECONDS, gt=0, le=30)


class BreakerOpenError(Exception):
    """The call was not attempted: the breaker is open, or half-open with its probes busy."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"circuit breaker {name} is {state}")
        self.name = name
        self.state = state


class SlowCallError(Exception):
    """A call that succeeded but took longer than the slow-call threshold (counted as failure)."""


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: CircuitBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        self.owner._on_transition(old.name if old else None, new.name)


@dataclass
class BreakerSnapshot:
    name: str
    state: str
    fail_counter: int
    probes_in_flight: int
    opened_for_seconds: float | None
    transitions: dict[str, int]


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
        clock: Clock = time.monotonic,
        on_transition: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self.clock = clock
        self._on_change = on_transition
        self._opened_at: float | None = None
        self._probes = 0
        self.transitions: Counter[str] = Counter()
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=self.config.fail_max,
            reset_timeout=self.config.reset_timeout_seconds,
            exclude=[lambda exc: not isinstance(exc, SlowCallError) and not is_failure(exc)],
            listeners=[_Transitions(self)],
            name=name,
            throw_new_error_on_trip=False,
        )

    @property
    def state(self) -> str:
        return self._breaker.current_state

    def _on_transition(self, old: str | None, new: str) -> None:
        if new == pybreaker.STATE_OPEN:
            self._opened_at = self.clock()
        self.transitions[f"{old}->{new}"] += 1
        log.warning("breaker %s: %s -> %s", self.name, old, new)
        if self._on_change:
            self._on_change(self.name, old or "", new)

    def allows(self) -> bool:
        """Would a call be attempted now? (Without attempting one.)"""
        if self.state == pybreaker.STATE_OPEN:
            return self._open_timeout_elapsed() and self._probes < self.config.half_open_max_calls
        if self.state == pybreaker.STATE_HALF_OPEN:
            return self._probes < self.config.half_open_max_calls
        return True

    def would_probe(self) -> bool:
        """Would a call made now be a half-open trial (rather than a normal or refused one)?"""
        return self.state != pybreaker.STATE_CLOSED and self.allows()

    def _open_timeout_elapsed(self) -> bool:
        return (
            self._opened_at is None
            or self.clock() - self._opened_at >= self.config.reset_timeout_seconds
        )

    def calling(self) -> _Guarded:
        """Guard one awaited call (``async with breaker.calling(): ...``). Raises
        :class:`BreakerOpenError` on entry, without attempting the call, while open."""
        return _Guarded(self)

    def snapshot(self) -> BreakerSnapshot:
        opened = None
        if self.state == pybreaker.STATE_OPEN and self._opened_at is not None:
            opened = round(self.clock() - self._opened_at, 3)
        return BreakerSnapshot(
            self.name,
            self.state,
            self._breaker.fail_counter,
            self._probes,
            opened,
            dict(self.transitions),
        )


class _Guarded:
    """One call through a :class:`CircuitBreaker`: pybreaker's own ``calling()`` around the
    awaited body, plus the half-open probe count and the slow-call check. A class rather
    than ``@asynccontextmanager``: it runs on every forward, and costs a third as much."""

    __slots__ = ("cb", "inner", "probe", "started")

    def __init__(self, cb: CircuitBreaker) -> None:
        self.cb = cb

    async def __aenter__(self) -> None:
        cb = self.cb
        state = cb.state
        if state == pybreaker.STATE_OPEN:
            if not cb._open_timeout_elapsed():
                raise BreakerOpenError(cb.name, "open")
            cb._breaker.half_open()
            state = pybreaker.STATE_HALF_OPEN
        self.probe = state == pybreaker.STATE_HALF_OPEN
        if self.probe:
            if cb._probes >= cb.config.half_open_max_calls:
                raise BreakerOpenError(cb.name, "half-open")
            cb._probes += 1
        self.started = cb.clock()
        self.inner = cb._breaker.calling()
        self.inner.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        cb = self.cb
        try:
            if exc is None:
                slow = cb.config.slow_call_seconds
                if slow is not None and cb.clock() - self.started > slow:
                    # counted as a failure by pybreaker; the caller keeps its good answer
                    with contextlib.suppress(SlowCallError):
                        self.inner.__exit__(
                            SlowCallError,
                            SlowCallError(f"{cb.name} call took longer than {slow}s"),
                            None,
                        )
                    return False
            self.inner.__exit__(exc_type, exc, tb)  # counts it, and re-raises it
            return False
        finally:
            if self.probe:
                cb._probes -= 1
