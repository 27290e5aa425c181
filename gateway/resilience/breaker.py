"""Circuit breakers: an explicit state model on pybreaker's public API, correct under asyncio.

pybreaker is the engine: it counts failures, runs the closed/open/half-open state machine,
excludes business errors and notifies listeners (``state_change``, ``failure``,
``success``, ``before_call``), which is how this module hears of every transition. Its own
async support is Tornado-only, and ``breaker.call(async_fn)`` would count an un-awaited
coroutine as a success, so a call holds pybreaker's sync ``calling()`` context open around
the ``await`` instead (:class:`BreakerCall`). On top of the engine, in the resilience4j
shape (``tryAcquirePermission`` / ``onSuccess`` / ``onError``):

- :class:`BreakerState`, the three states; :class:`BreakerEvent`, one recorded
  transition (from, to, when, why), kept by :class:`BreakerEvents` for ``/ops/status``
  and logged;
- the open -> half-open timeout on an injected clock (tests move time by hand), moved
  through pybreaker's public ``half_open()``;
- half-open admits at most ``half_open_max_calls`` concurrent probes; everything else keeps
  failing fast, so recovery of a black-holed upstream does not stall every request for a
  full timeout;
- the slow-call threshold: a success slower than ``slow_call_seconds`` counts as a failure;
- probe patience (:meth:`CircuitBreaker.patiently`): the caller of a half-open trial waits
  at most ``probe_patience_seconds``; the trial runs on and decides the state;
- with a fleet (:mod:`gateway.resilience.fleet`), the state shared with the other gateway
  instances: the breaker reports its failures and transitions to it and follows its
  openings and closes (:meth:`CircuitBreaker.follow_open`, :meth:`CircuitBreaker.follow_close`),
  and only the holder of the fleet's probe lease probes. Where requests alone refresh the
  fleet's copy (Lambda), :meth:`BreakerCall.__aenter__` first awaits a due refresh,
  within its short bound (:meth:`FleetBreakers.refresh_if_due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pybreaker
from pydantic import BaseModel, ConfigDict, Field

from module_kit import logs

if TYPE_CHECKING:
    from gateway.resilience.fleet import FleetBreakers

log = logging.getLogger("relay.gateway.breaker")

Clock = Callable[[], float]

DEFAULT_FAIL_MAX = 5
DEFAULT_RESET_TIMEOUT_SECONDS = 10.0
DEFAULT_HALF_OPEN_MAX_CALLS = 1
DEFAULT_SLOW_CALL_SECONDS: float | None = None
DEFAULT_PROBE_PATIENCE_SECONDS = 0.1
DEFAULT_EVENTS_KEPT = 20  # the newest transitions shown in /ops/status

T = TypeVar("T")


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


class BreakerState(StrEnum):
    """The breaker's states; the values are pybreaker's own state names."""

    CLOSED = pybreaker.STATE_CLOSED
    OPEN = pybreaker.STATE_OPEN
    HALF_OPEN = pybreaker.STATE_HALF_OPEN


_STATES = {state.value: state for state in BreakerState}


class BreakerOpenError(Exception):
    """The call was not attempted: the breaker is open, or half-open with its probes busy."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"circuit breaker {name} is {state}")
        self.name = name
        self.state = state


class SlowCallError(Exception):
    """A call that succeeded but took longer than the slow-call threshold (counted as failure)."""


class ProbeStillRunningError(Exception):
    """The half-open trial outlasted its caller's patience; ``trial`` runs on to its end
    (and decides the breaker's state). Await :meth:`outcome` to wait for it after all."""

    def __init__(self, name: str, trial: asyncio.Future[Any]) -> None:
        super().__init__(f"circuit breaker {name}: the half-open probe is still running")
        self.name = name
        self.trial = trial

    async def outcome(self) -> Any:
        return await self.trial


@dataclass(frozen=True, slots=True)
class BreakerEvent:
    """One state transition, as logged and shown in ``/ops/status``. ``at`` is on the
    breaker's (monotonic) clock."""

    breaker: str
    from_state: BreakerState | None
    to_state: BreakerState
    at: float
    reason: str

    @property
    def transition(self) -> str:
        return f"{self.from_state}->{self.to_state}"


class BreakerEvents:
    """A breaker's recorded transitions: a count per transition and the newest few events."""

    def __init__(self, keep: int = DEFAULT_EVENTS_KEPT) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[BreakerEvent] = deque(maxlen=keep)

    def record(self, event: BreakerEvent) -> None:
        self.counts[event.transition] += 1
        self.recent.append(event)

    @property
    def last(self) -> BreakerEvent | None:
        return self.recent[-1] if self.recent else None


class _EngineListener(pybreaker.CircuitBreakerListener):
    """pybreaker's listener interface: the only way the engine's news reaches the model."""

    def __init__(self, owner: CircuitBreaker) -> None:
        self.owner = owner

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kw: Any) -> None:
        self.owner.calls += 1

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        owner = self.owner
        owner.failures += 1
        owner.last_failure = exc
        if owner.fleet is not None and cb.current_state == pybreaker.STATE_CLOSED:
            owner.failed_since_success = True
            owner.fleet.failed(owner)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        owner = self.owner
        owner.successes += 1
        fleet = owner.fleet  # with one: a success after failures (here, or in its copy)
        if fleet is not None and (owner.failed_since_success or owner.name in fleet.failing):
            owner.failed_since_success = False
            fleet.recovered(owner)

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        self.owner._transitioned(_STATES[old.name] if old else None, _STATES[new.name])


@dataclass
class BreakerSnapshot:
    name: str
    state: BreakerState
    fail_counter: int
    probes_in_flight: int
    opened_for_seconds: float | None
    transitions: dict[str, int]
    calls: int
    failures: int
    # the newest transitions, newest last: from, to, reason, seconds ago
    events: list[dict[str, Any]]


class CircuitBreaker:
    """One module's breaker. A call: :meth:`try_acquire_permission`, the awaited work,
    then :meth:`on_success` or :meth:`on_error`; :meth:`calling` does all three."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
        clock: Clock = time.monotonic,
        on_transition: Callable[[str, str, str], None] | None = None,
        fleet: FleetBreakers | None = None,
    ) -> None:
        """``fleet``: the state shared with the other gateway instances
        (:mod:`gateway.resilience.fleet`); ``None``, this breaker decides alone."""
        self.name = name
        self.config = config or BreakerConfig()
        self.clock = clock
        self.events = BreakerEvents()
        self.calls = self.failures = self.successes = 0
        self.last_failure: BaseException | None = None
        self.probes_in_flight = 0
        self._on_change = on_transition
        self._opened_at: float | None = None
        self._trials: set[asyncio.Future[Any]] = set()  # probes that outlasted their caller
        self.fleet = fleet
        self.failed_since_success = False
        self._following_fleet = False  # a transition made to follow the fleet's state
        self._reason_given: str | None = None
        self._engine = pybreaker.CircuitBreaker(
            fail_max=self.config.fail_max,
            reset_timeout=self.config.reset_timeout_seconds,
            exclude=[lambda exc: not isinstance(exc, SlowCallError) and not is_failure(exc)],
            listeners=[_EngineListener(self)],
            name=name,
            throw_new_error_on_trip=False,
        )
        if fleet is not None:
            fleet.attach(self)

    # --- the state model ---------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        return _STATES[self._engine.current_state]

    @property
    def transitions(self) -> Counter[str]:
        return self.events.counts

    def _transitioned(self, old: BreakerState | None, new: BreakerState) -> None:
        now = self.clock()
        if new is BreakerState.OPEN:
            self._opened_at = now
        reason, self._reason_given = self._reason_given or self._reason(old, new), None
        event = BreakerEvent(self.name, old, new, now, reason)
        self.events.record(event)
        log.warning(
            "breaker %s: %s -> %s (%s)",
            self.name,
            old,
            new,
            event.reason,
            extra={**logs.fields(module=self.name), "breaker": new.value},
        )
        if self._on_change:
            self._on_change(self.name, old or "", new)
        if self.fleet is not None and not self._following_fleet:
            if new is BreakerState.OPEN:
                self.fleet.opened(self, reason)
            elif new is BreakerState.CLOSED and old is BreakerState.HALF_OPEN:
                self.fleet.closed(self)

    # --- the fleet's state (gateway.resilience.fleet), through pybreaker's public API ----

    def follow_open(self, reason: str, *, opened_seconds_ago: float = 0.0) -> None:
        """Open because another instance opened the module's breaker ``opened_seconds_ago``:
        the reset timeout runs from then."""
        self._following_fleet, self._reason_given = True, reason
        try:
            self._engine.open()
        finally:
            self._following_fleet = False
        if self._opened_at is not None:
            self._opened_at -= opened_seconds_ago

    def follow_close(self, reason: str) -> None:
        """Close because the opening this breaker followed ended fleet-wide."""
        self._following_fleet, self._reason_given = True, reason
        try:
            self._engine.close()
        finally:
            self._following_fleet = False

    def reset(self, reason: str) -> None:
        """Close now, fleet-wide too: the module behind it changed (a release moved the
        stable version to the one it just judged), so the failures counted were another
        version's."""
        if self.state is BreakerState.CLOSED:
            return
        self._reason_given = reason
        self._engine.close()

    def open_for_fleet(self, reason: str) -> None:
        """Open on the fleet's failure count (published like an opening of its own)."""
        self._reason_given = reason
        self._engine.open()

    def _reason(self, old: BreakerState | None, new: BreakerState) -> str:
        failure = type(self.last_failure).__name__ if self.last_failure else "none"
        if new is BreakerState.OPEN and old is BreakerState.HALF_OPEN:
            return f"the probe failed ({failure})"
        if new is BreakerState.OPEN:
            return f"{self.config.fail_max} failures in a row (last: {failure})"
        if new is BreakerState.HALF_OPEN:
            return f"open for {self.config.reset_timeout_seconds}s: probing"
        return "the probe succeeded" if old is BreakerState.HALF_OPEN else "closed"

    def _reset_timeout_elapsed(self) -> bool:
        return (
            self._opened_at is None
            or self.clock() - self._opened_at >= self.config.reset_timeout_seconds
        )

    def allows(self) -> bool:
        """Would a call be attempted now? (Without attempting one.)"""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        probes_free = self.probes_in_flight < self.config.half_open_max_calls
        if state is BreakerState.OPEN:
            return (
                probes_free
                and self._reset_timeout_elapsed()
                and (self.fleet is None or self.fleet.may_probe(self))
            )
        return probes_free

    def would_probe(self) -> bool:
        """Would a call made now be a half-open trial (rather than a normal or refused one)?"""
        return self.state is not BreakerState.CLOSED and self.allows()

    # --- one call: permission, then success or error -----------------------------------

    def try_acquire_permission(self, call: BreakerCall) -> None:
        """Admit ``call`` or raise :class:`BreakerOpenError` without attempting it. Open past
        its reset timeout moves to half-open, where at most ``half_open_max_calls`` probes
        are admitted at once. With a fleet, its copy is refreshed in the background when
        due, and only the instance holding the fleet's probe lease probes."""
        fleet = self.fleet
        if fleet is not None:
            fleet.tick()
        state = self.state
        if state is BreakerState.OPEN:
            if not self._reset_timeout_elapsed():
                raise BreakerOpenError(self.name, BreakerState.OPEN)
            if fleet is not None and not fleet.may_probe(self):
                raise BreakerOpenError(self.name, BreakerState.OPEN)
            self._engine.half_open()
            state = BreakerState.HALF_OPEN
        call.probe = state is BreakerState.HALF_OPEN
        if call.probe:
            if self.probes_in_flight >= self.config.half_open_max_calls:
                raise BreakerOpenError(self.name, BreakerState.HALF_OPEN)
            self.probes_in_flight += 1
        call.started = self.clock()
        call.engine_call = self._engine.calling()
        call.engine_call.__enter__()

    def on_success(self, call: BreakerCall) -> None:
        """The call answered. Slower than ``slow_call_seconds``, it counts as a failure
        (the caller keeps its good answer)."""
        try:
            slow = self.config.slow_call_seconds
            if slow is not None and self.clock() - call.started > slow:
                with contextlib.suppress(SlowCallError):
                    call.engine_call.__exit__(
                        SlowCallError,
                        SlowCallError(f"{self.name} call took longer than {slow}s"),
                        None,
                    )
            else:
                call.engine_call.__exit__(None, None, None)
        finally:
            if call.probe:
                self.probes_in_flight -= 1

    def on_error(self, call: BreakerCall, exc: BaseException) -> None:
        """The call raised ``exc``: the engine counts it, unless ``is_failure`` excludes it."""
        try:
            call.engine_call.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            if call.probe:
                self.probes_in_flight -= 1

    def calling(self) -> BreakerCall:
        """Guard one awaited call (``async with breaker.calling(): ...``). Raises
        :class:`BreakerOpenError` on entry, without attempting the call, while open."""
        return BreakerCall(self)

    # --- probe patience ----------------------------------------------------------------

    async def patiently(self, attempt: Awaitable[T]) -> T:
        """Await ``attempt``, the half-open trial: at most ``probe_patience_seconds``, then
        raise :class:`ProbeStillRunningError` while the trial runs on (kept here) and decides the
        state. A recovered module answers well within the patience."""
        trial = asyncio.ensure_future(attempt)
        done, _ = await asyncio.wait({trial}, timeout=self.config.probe_patience_seconds)
        if done:
            return trial.result()
        self._trials.add(trial)
        trial.add_done_callback(self._trial_finished)
        raise ProbeStillRunningError(self.name, trial)

    def _trial_finished(self, trial: asyncio.Future[Any]) -> None:
        self._trials.discard(trial)
        if not trial.cancelled():
            trial.exception()  # counted by the breaker; the caller may have gone

    # --- views -------------------------------------------------------------------------

    def snapshot(self) -> BreakerSnapshot:
        now = self.clock()
        state = self.state
        opened = None
        if state is BreakerState.OPEN and self._opened_at is not None:
            opened = round(now - self._opened_at, 3)
        return BreakerSnapshot(
            self.name,
            state,
            self._engine.fail_counter,
            self.probes_in_flight,
            opened,
            dict(self.events.counts),
            self.calls,
            self.failures,
            [
                {
                    "from": e.from_state,
                    "to": e.to_state,
                    "reason": e.reason,
                    "seconds_ago": round(now - e.at, 3),
                }
                for e in self.events.recent
            ],
        )


class BreakerCall:
    """One call through a :class:`CircuitBreaker`, as an async context manager around the
    awaited work. A class rather than ``@asynccontextmanager``: it runs on every forward,
    and costs a third as much."""

    __slots__ = ("breaker", "engine_call", "probe", "started")
    engine_call: Any  # pybreaker's ``calling()`` context, entered while the call runs
    started: float

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self.probe = False

    async def __aenter__(self) -> BreakerCall:
        fleet = self.breaker.fleet
        if fleet is not None and fleet.requests_refresh:
            await fleet.refresh_if_due()  # Lambda: the fleet's copy current, within its bound
        self.breaker.try_acquire_permission(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None:
            self.breaker.on_success(self)
        else:
            self.breaker.on_error(self, exc)
        return False
