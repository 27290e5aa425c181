"""Load shedding: near its own capacity, a gateway process refuses its least important
traffic first, with a fast 503, so critical traffic (load assignments, gate passes) keeps
its latency.

Two signals, read on every forwarded request (Envoy's overload manager and admission
control; CoDel's standing queue):

- **requests in flight** in this process (:class:`ShedLoad` counts them: admitted and not
  yet answered), against ``max_in_flight``: the signal of a slow upstream, when forwards
  pile up waiting for modules;
- **queueing delay**, as the event loop's lag, against ``max_delay_ms``: a probe sleeps
  ``probe_interval_seconds`` and measures how late it wakes. One process has one event
  loop, and every request waits in its ready queue before and between its steps, so the
  loop's lag *is* the time a request queues. It is the signal of a saturated CPU, which
  the in-flight count misses: with a fast upstream, forwards finish in a millisecond and
  few are ever in flight while requests queue in the loop and in the sockets. The
  server does not say when a request's bytes arrived, so the time each request waited
  cannot be measured at the step; the probe measures the same queue for everyone.
  ``delay_ms`` is the mean lag of the last ``probe_window`` probes (~100 ms) less the
  largest one: a single late probe (a collector pause, a burst that clears) sheds nothing,
  a standing queue (CoDel's point) does. Not their smallest, as CoDel takes of packets'
  sojourn times: the loop runs its ready callbacks in batches, and a probe wakes anywhere
  in one, so the smallest of a few probes reads a small part of the wait requests meet.
  The lag counts only while requests arrive at ``min_rate_for_delay`` a second or more
  over the same window: a process that quiet is not late because of its own traffic
  (the host is busy, or a test suite runs beside it), and shedding its few requests would
  relieve nothing. A probe of a quieter window reads as no lag.

``pressure`` is the larger of the two as a fraction of its capacity. Each tier is shed
from its own fraction (``shed_at``), in this order: ``optional`` (routes with
``shed_tier = "optional"`` in the route table: traffic no driver waits on), then
``deferrable`` (message), ``degradable`` (navigate), and ``critical`` (loads, gatepass)
only at the hard limit, 1.0. A route's tier is its module's unless the route table
overrides it (``shed_tier``). Hysteresis: a tier being shed stays shed until pressure
has stayed below ``resume_below`` of its threshold for ``hold_seconds`` (a second's hold,
as Envoy's overload actions and CoDel's interval hold a decision), and is then let back in
over ``ramp_seconds``: a share of its requests growing evenly from none to all, as a
balancer's slow start brings a new target in. Pressure back at ``resume_below`` sheds it
whole again and the hold starts over. Let back in whole, a tier whose clients offer more
than the spare capacity would flap: they return at once and the queue is back before the
next probe, once a second, and those floods were the critical route's tail latency under
overload. Ramped, the tier comes back only as far as the process has room for.

A shed request is answered at once by :class:`ShedLoad`, right after ``MatchRoute`` and
before authentication (a shed costs a dict lookup, a comparison and one prebuilt answer):
503, problem type ``overloaded``, ``Retry-After`` (``retry_after_seconds``, small and the
same for everyone). The gateway's own routes (``/ops/...``, ``/healthz``, deferred
status) never reach this step: operators reach their levers under overload.

``forced_tiers`` (an operator's lever) names tiers shed whatever the load; only those
tiers, so a lever that means "everything below degradable" names all three.

In Lambda (``AWS_LAMBDA_FUNCTION_NAME`` set) an execution environment serves one request
at a time: there is no in-flight count or event-loop queue to read, so shedding by load is
off by default there (``enabled=False``; Lambda's own concurrency limit is the admission
control) and only forced tiers are shed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import config
from gateway.ops.metrics import RequestMetrics
from gateway.routing.routes import RouteTable
from module_kit.http import new_request_id
from shared_contracts import headers
from shared_contracts.errors import OverloadedError

# Shed in this order: the first tier first.
TIERS = ("optional", "deferrable", "degradable", "critical")
# One process's hard limits, where even critical requests are shed, and each tier's
# fraction of them; the named defaults are gateway.config's (RELAY_SHED_*). In flight:
# 2,000 forwards admitted is far past what one process forwards well (its upstream pool
# holds 200 connections; each module's bulkhead less), so more only wait and take memory.
# Delay: a standing 200 ms in the loop, which a request meets at each of its few turns
# through it. The other tiers go long before: a process whose loop has room wakes its
# probe within a millisecond or two (libuv's timers count whole milliseconds; a thread
# holding the GIL adds up to its 5 ms switch interval), so a standing 10 ms (optional),
# 20 ms (deferrable) or 40 ms (degradable) means requests queue, and critical latency with
# them. In flight, those fractions are 100, 200 and 400.
DEFAULT_MAX_IN_FLIGHT = config.DEFAULT_SHED_MAX_IN_FLIGHT
DEFAULT_MAX_DELAY_MS = config.DEFAULT_SHED_MAX_DELAY_MS
DEFAULT_SHED_AT: Mapping[str, float] = MappingProxyType(
    {
        "optional": config.DEFAULT_SHED_AT_OPTIONAL,
        "deferrable": config.DEFAULT_SHED_AT_DEFERRABLE,
        "degradable": config.DEFAULT_SHED_AT_DEGRADABLE,
        "critical": config.DEFAULT_SHED_AT_CRITICAL,
    }
)
# A shed tier is let back in once pressure has stayed below this share of its threshold
# for this long (hysteresis), over ``ramp_seconds``: a growing share of its requests.
DEFAULT_RESUME_BELOW = 0.5
DEFAULT_HOLD_SECONDS = 1.0
DEFAULT_RAMP_SECONDS = 5.0
DEFAULT_PROBE_INTERVAL_SECONDS = 0.02
DEFAULT_PROBE_WINDOW = 5  # probes: ~100 ms (CoDel's interval)
# Requests a second below which the loop's lag is not this process's own queue (one
# process answers some thousands a second: this is a few percent of it).
DEFAULT_MIN_RATE_FOR_DELAY = 500.0
DEFAULT_RETRY_AFTER_SECONDS = config.DEFAULT_SHED_RETRY_AFTER_SECONDS
NOTHING_FORCED: Callable[[], frozenset[str]] = frozenset


@dataclass(frozen=True)
class ShedConfig:
    """One process's capacity and where each tier is shed. Refused at construction when a
    value could never work (a threshold outside (0, 1], tiers out of order)."""

    enabled: bool = True
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_delay_ms: float = DEFAULT_MAX_DELAY_MS
    shed_at: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SHED_AT))
    resume_below: float = DEFAULT_RESUME_BELOW
    hold_seconds: float = DEFAULT_HOLD_SECONDS
    ramp_seconds: float = DEFAULT_RAMP_SECONDS
    probe_interval_seconds: float = DEFAULT_PROBE_INTERVAL_SECONDS
    probe_window: int = DEFAULT_PROBE_WINDOW
    min_rate_for_delay: float = DEFAULT_MIN_RATE_FOR_DELAY
    retry_after_seconds: int = DEFAULT_RETRY_AFTER_SECONDS

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")
        if self.max_delay_ms <= 0:
            raise ValueError(f"max_delay_ms must be above 0, not {self.max_delay_ms}")
        if set(self.shed_at) != set(TIERS):
            raise ValueError(
                f"shed_at names each of {', '.join(TIERS)}, not {sorted(self.shed_at)}"
            )
        fractions = [self.shed_at[t] for t in TIERS]
        if not all(0 < f <= 1 for f in fractions):
            raise ValueError(f"shed_at fractions must be in (0, 1]: {dict(self.shed_at)}")
        if fractions != sorted(fractions):
            raise ValueError(
                f"shed_at must not shed a tier before a less important one ({', '.join(TIERS)}"
                f" in order): {dict(self.shed_at)}"
            )
        if self.hold_seconds < 0 or self.ramp_seconds < 0:
            raise ValueError(
                f"hold_seconds and ramp_seconds must not be negative, not {self.hold_seconds} "
                f"and {self.ramp_seconds}"
            )
        if not 0 < self.resume_below <= 1:
            raise ValueError(f"resume_below must be in (0, 1], not {self.resume_below}")
        if self.probe_interval_seconds <= 0 or self.probe_window < 1:
            raise ValueError("the lag probe needs an interval above 0 and a window of 1 or more")
        if self.retry_after_seconds < 1:
            raise ValueError(
                f"retry_after_seconds must be at least 1, not {self.retry_after_seconds}"
            )


def shed_config(settings: config.GatewaySettings) -> ShedConfig:
    """The process's :class:`ShedConfig` from its settings (``RELAY_SHED_*``)."""
    return ShedConfig(
        enabled=settings.shed_load,
        max_in_flight=settings.shed_max_in_flight,
        max_delay_ms=settings.shed_max_delay_ms,
        shed_at={
            "optional": settings.shed_at_optional,
            "deferrable": settings.shed_at_deferrable,
            "degradable": settings.shed_at_degradable,
            "critical": settings.shed_at_critical,
        },
        retry_after_seconds=settings.shed_retry_after_seconds,
    )


class Shedder:
    """The decision (:meth:`admit`), its two signals and its counts.

    ``in_flight``: forwards admitted and not yet answered; ``delay_ms``: the event loop's
    standing lag (:meth:`probe`, or :meth:`observe_lag` from a test); ``shed``: requests
    refused, by tier; ``forced_tiers``: the operators' lever (settable after construction).
    """

    def __init__(
        self,
        config: ShedConfig | None = None,
        *,
        forced_tiers: Callable[[], frozenset[str]] = NOTHING_FORCED,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config or ShedConfig()
        self.forced_tiers = forced_tiers
        self.clock = clock
        self.sleep = sleep
        self.in_flight = 0
        self.arrivals = 0  # requests that reached shedding (admitted or shed), ever
        self.delay_ms = 0.0
        self.shed: Counter[str] = Counter()
        self.shedding: set[str] = set()  # tiers shed by load now (hysteresis state)
        self._calm_since: dict[str, float] = {}  # shed tier -> since when below its resume
        self._credit: dict[str, float] = {}  # a tier let back in: its share, accrued
        self._lags: deque[float] = deque(maxlen=self.config.probe_window)
        self._task: asyncio.Task[None] | None = None
        cfg = self.config
        # per tier: (pressure it is shed from, pressure it is admitted again below)
        self._limits = {t: (cfg.shed_at[t], cfg.shed_at[t] * cfg.resume_below) for t in TIERS}
        self._inverse_in_flight = 1 / cfg.max_in_flight
        self._inverse_delay = 1 / cfg.max_delay_ms

    @property
    def pressure(self) -> float:
        """The fuller of the two signals, as a fraction of its capacity (1.0: the limit)."""
        return max(self.in_flight * self._inverse_in_flight, self.delay_ms * self._inverse_delay)

    def admit(self, tier: str, *, whole_only: bool = False) -> bool:
        """True: forward the request. False: shed it (and count it).

        ``whole_only`` (:class:`EarlyShed`): shed only while the tier is shed whole; a
        request of a tier being let back in is admitted here, and :class:`ShedLoad` asks
        again and decides whether it is in the share."""
        forced = self.forced_tiers()
        if forced and tier in forced:
            self.shed[tier] += 1
            return False
        if not self.config.enabled:
            return True
        pressure = self.pressure
        start, resume = self._limits[tier]
        if tier in self.shedding:
            if pressure >= resume:  # not calm: the hold and any ramp start over
                self._calm_since.pop(tier, None)
                self._credit.pop(tier, None)
            else:
                share = self._share(tier)
                if share >= 1:
                    self.shedding.discard(tier)
                    del self._calm_since[tier]
                    self._credit.pop(tier, None)
                    return True
                if share > 0 and (whole_only or self._in_share(tier, share)):
                    return True
            self.shed[tier] += 1
            return False
        if pressure >= start:
            self.shedding.add(tier)
            self.shed[tier] += 1
            return False
        return True

    def _share(self, tier: str) -> float:
        """The share of a shed tier's requests let in now: none until pressure has stayed
        below the tier's resume level for ``hold_seconds``, then growing evenly to all of
        them over ``ramp_seconds``. Pressure back at the resume level starts it over."""
        now = self.clock()
        calm = now - self._calm_since.setdefault(tier, now) - self.config.hold_seconds
        if calm < 0:
            return 0.0
        ramp = self.config.ramp_seconds
        return calm / ramp if ramp > 0 and calm < ramp else 1.0

    def _letting_in(self) -> list[tuple[str, float]]:
        """The shed tiers past their hold, each with the share let in now."""
        ramping = [(t, self._share(t)) for t in TIERS if t in self._calm_since]
        return [(t, share) for t, share in ramping if share > 0]

    def _in_share(self, tier: str, share: float) -> bool:
        """Lets in ``share`` of the tier's requests, evenly (every 1/share-th), not at random."""
        credit = self._credit.get(tier, 0.0) + share
        if credit >= 1:
            self._credit[tier] = credit - 1
            return True
        self._credit[tier] = credit
        return False

    def observe_lag(self, lag_ms: float) -> None:
        """One probe's lag; ``delay_ms`` becomes the mean of the last ``probe_window`` less
        their largest (all of them while there are fewer than three)."""
        lags = self._lags
        lags.append(max(0.0, lag_ms))
        if len(lags) < 3:
            self.delay_ms = sum(lags) / len(lags)
        else:
            self.delay_ms = (sum(lags) - max(lags)) / (len(lags) - 1)

    async def probe(self) -> None:
        """Forever: sleep ``probe_interval_seconds`` and record how late the loop woke (no
        lag while fewer than ``min_rate_for_delay`` requests a second arrived over the
        last ``probe_window`` probes)."""
        interval = self.config.probe_interval_seconds
        seen: deque[tuple[float, int]] = deque([(self.clock(), self.arrivals)])
        seen_max = self.config.probe_window
        while True:
            started = self.clock()
            await self.sleep(interval)
            now = self.clock()
            since, arrivals = seen[0]
            seen.append((now, self.arrivals))
            if len(seen) > seen_max:
                seen.popleft()
            busy = (self.arrivals - arrivals) >= self.config.min_rate_for_delay * (now - since)
            self.observe_lag((now - started - interval) * 1000 if busy else 0.0)

    def start(self) -> None:
        """The lag probe, on the running loop (the app's lifespan); not when disabled."""
        if self.config.enabled and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.probe())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def view(self) -> dict[str, Any]:
        """For /ops/status."""
        cfg = self.config
        return {
            "enabled": cfg.enabled,
            "in_flight": self.in_flight,
            "max_in_flight": cfg.max_in_flight,
            "delay_ms": round(self.delay_ms, 2),
            "max_delay_ms": cfg.max_delay_ms,
            "pressure": round(self.pressure, 3),
            "shed_at": {t: cfg.shed_at[t] for t in TIERS},
            "shedding": [t for t in TIERS if t in self.shedding],
            "letting_in": {t: round(share, 3) for t, share in self._letting_in()},
            "forced": sorted(self.forced_tiers()),
            "shed": {t: self.shed[t] for t in TIERS},
        }


def shed_answer(tier: str, retry_after_seconds: int) -> tuple[dict[str, Any], bytes, bytes]:
    """The 503 for a shed request of ``tier``, built once: the ``http.response.start``
    message and its body around the request id (``prefix + request_id + suffix``)."""
    problem = OverloadedError(
        f"the gateway is overloaded and sheds {tier} requests: retry after {retry_after_seconds} s",
        retry_after=retry_after_seconds,
    ).to_problem("")
    body = json.dumps(problem.model_dump(exclude_none=True), separators=(",", ":"))
    prefix, _, suffix = body.partition('"request_id":""')
    start = {
        "type": "http.response.start",
        "status": problem.status,
        "headers": [
            (b"content-type", headers.PROBLEM_MEDIA_TYPE.encode()),
            (b"retry-after", str(retry_after_seconds).encode()),
        ],
    }
    return start, (prefix + '"request_id":"').encode(), ('"' + suffix).encode()


def route_tiers(table: RouteTable) -> dict[str, str]:
    """Each route's shedding tier, by prefix: its ``shed_tier``, or its module's tier."""
    return {
        route.prefix: str(route.shed_tier or table.modules[route.module].tier)
        for route in table.routes
    }


class EarlyShed:
    """Shedding in the server, before the request becomes an ASGI call
    (:class:`gateway.edge.server.EdgeProtocol` asks :meth:`answer` once a request's head
    is read; while :meth:`active`, before parsing a read that is one whole request). While
    a tier is shed whole, or forced, its requests are refused there with
    the bytes of the same 503 :class:`ShedLoad` gives, at a fraction of its cost: no task,
    no request/response cycle, no pipeline. Everything else (and every request while
    nothing is shed: one set test and the forced tiers) goes on to :class:`ShedLoad`,
    which decides again, starts a tier's shedding, and picks the share of a tier being
    let back in."""

    def __init__(
        self,
        shedder: Shedder,
        table: RouteTable,
        *,
        answer_headers: tuple[tuple[bytes, bytes], ...] = (),
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.shedder = shedder
        self.table = table
        self.tiers = route_tiers(table)
        self.metrics = metrics
        retry_after = shedder.config.retry_after_seconds
        self.answers = {
            tier: _http_answer(shed_answer(tier, retry_after), answer_headers) for tier in TIERS
        }

    def active(self) -> bool:
        """Whether any tier is shed now (by load or by a lever)."""
        shedder = self.shedder
        return bool(shedder.shedding) or bool(shedder.forced_tiers())

    def answer(self, target: bytes) -> bytes | None:
        """The whole HTTP answer for a request to ``target`` (its request-target) that is
        shed now, or None to let it in."""
        if not self.active():
            return None
        shedder = self.shedder
        path = target.partition(b"?")[0].decode("latin-1")
        route = self.table.match(path)
        if route is None:
            return None
        tier = self.tiers[route.prefix]
        if shedder.admit(tier, whole_only=True):
            return None  # ShedLoad counts its arrival
        shedder.arrivals += 1
        if self.metrics is not None:
            self.metrics.record(route.module, route.module, route.prefix, "shed", 503, 0.0)
        head, prefix, suffix = self.answers[tier]
        rid = new_request_id().encode()
        body = prefix + rid + suffix
        return head + rid + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def _http_answer(
    shed: tuple[dict[str, Any], bytes, bytes], answer_headers: tuple[tuple[bytes, bytes], ...]
) -> tuple[bytes, bytes, bytes]:
    """A shed answer as HTTP/1.1 bytes: the head up to the request id's value, and the
    body around it."""
    start, prefix, suffix = shed
    lines = [b"HTTP/1.1 503 Service Unavailable"]
    lines += [name + b": " + value for name, value in (*start["headers"], *answer_headers)]
    lines.append(headers.REQUEST_ID.lower().encode() + b": ")
    return b"\r\n".join(lines), prefix, suffix


class ShedLoad:
    """After ``MatchRoute``: the route's shedding tier (``shed_tier`` in the route table, or
    its module's tier) admitted by the :class:`Shedder`, counted in flight until its answer
    is sent; or a prebuilt 503 ``overloaded`` at once."""

    def __init__(
        self,
        app: ASGIApp,
        shedder: Shedder,
        table: RouteTable,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self.app = app
        self.shedder = shedder
        self.metrics = metrics  # a shed request counts as outcome "shed" under its module
        self.tiers = route_tiers(table)
        retry_after = shedder.config.retry_after_seconds
        self.answers = {tier: shed_answer(tier, retry_after) for tier in TIERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        tier = self.tiers[state["route"].prefix]
        shedder = self.shedder
        shedder.arrivals += 1
        if not shedder.admit(tier):
            if self.metrics is not None:
                route = state["route"]
                self.metrics.record(route.module, route.module, route.prefix, "shed", 503, 0.0)
            start, prefix, suffix = self.answers[tier]
            body = prefix + state.get("request_id", "").encode() + suffix
            await send(
                {
                    "type": "http.response.start",
                    "status": start["status"],
                    "headers": [*start["headers"], (b"content-length", str(len(body)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        shedder.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            shedder.in_flight -= 1
