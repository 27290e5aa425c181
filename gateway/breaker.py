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

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pybreaker
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("relay.gateway.breaker")

Clock = Callable[[], float]

DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT_SECONDS = 10.0
DEFAULT_HALF_OPEN_MAX_CALLS = 1
DEFAULT_SLOW_CALL_SECONDS: float | None = None


class BreakerConfig(BaseModel):
    """Validated at start-up: a nonsensical breaker is refused before it can mislead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_max: int = Field(default=DEFAULT_FAIL_MAX, ge=1, le=1000)
    reset_timeout_seconds: float = Field(default=DEFAULT_RESET_TIMEOUT_SECONDS, gt=0, le=3600)
    half_open_max_calls: int = Field(default=DEFAULT_HALF_OPEN_MAX_CALLS, ge=1, le=100)
    slow_call_seconds: float | None = Field(default=DEFAULT_SLOW_CALL_SECONDS, gt=0)


class BreakerOpenError(Exception):
    """The call was not attempted: the breaker is open, or half-open with its probes busy."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"circuit breaker {name} is {state}")
        self.name = name
        self.state = state


class SlowCallError(Exception):
    """A call that succeeded but took longer than the slow-call threshold (counted as failure)."""


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: "CircuitBreaker") -> None:
        self.owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker, old, new) -> None:  # type: ignore[no-untyped-def]
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

    def _open_timeout_elapsed(self) -> bool:
        return (self._opened_at is None
                or self.clock() - self._opened_at >= self.config.reset_timeout_seconds)

    @asynccontextmanager
    async def calling(self) -> AsyncIterator[None]:
        """Guard one awaited call. Raises :class:`BreakerOpenError` without attempting it."""
        state = self.state
        if state == pybreaker.STATE_OPEN:
            if not self._open_timeout_elapsed():
                raise BreakerOpenError(self.name, "open")
            self._breaker.half_open()
            state = pybreaker.STATE_HALF_OPEN
        probe = state == pybreaker.STATE_HALF_OPEN
        if probe:
            if self._probes >= self.config.half_open_max_calls:
                raise BreakerOpenError(self.name, "half-open")
            self._probes += 1
        started = self.clock()
        try:
            with self._breaker.calling():
                yield
                slow = self.config.slow_call_seconds
                if slow is not None and self.clock() - started > slow:
                    raise SlowCallError(f"{self.name} call took longer than {slow}s")
        except SlowCallError:
            pass  # counted as a failure by pybreaker; the caller keeps its good answer
        finally:
            if probe:
                self._probes -= 1

    def snapshot(self) -> BreakerSnapshot:
        opened = None
        if self.state == pybreaker.STATE_OPEN and self._opened_at is not None:
            opened = round(self.clock() - self._opened_at, 3)
        return BreakerSnapshot(self.name, self.state, self._breaker.fail_counter, self._probes,
                               opened, dict(self.transitions))
