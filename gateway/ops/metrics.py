"""The gateway's metrics: what on-call alarms and dashboards read (docs/operations.md,
"Metrics"), exposed by prometheus-client in its text format on ``GET /metrics``.

Two kinds, kept apart for the hot path's sake:

- **Per request** (:class:`RequestMetrics`): one count per (module, unit, route, outcome,
  status class) and one latency histogram per (module, outcome). A request adds to plain
  dicts (one event loop, one thread: no locks), bucketed with ``bisect``; prometheus-client
  reads them only when scraped, through :class:`GatewayCollector`. Its own ``Counter`` and
  ``Histogram`` take a lock and look a labelled child up on every ``inc``/``observe``,
  which would be the largest cost the forward adds.
- **Read at scrape time** from the objects that hold them: each upstream's breaker state
  and transitions, bulkhead use and limit, retry budget; load shedding; levers. Nothing is
  counted twice and nothing is kept that the objects do not keep already.

``unit`` is the upstream that answered: the module (``loads``), a cell (``loads/cell-1``),
a canary version (``loads@v42``) or a peer region's (``us-west-2:loads``), so cells,
regions and versions each get their own series without labels of their own.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from module_kit.lambda_entry import NAMESPACE

if TYPE_CHECKING:
    from gateway.forwarding.upstream import ModuleUpstream

# Latency buckets (seconds): from a fallback's answer (a few ms) to the longest deadline.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOME_REFUSED = "refused"  # a 4xx the gateway answered itself (auth, limits, no route)
OUTCOME_FAILED = "failed"  # a 5xx of the gateway's own (an unexpected error)
OUTCOME_SHED = "shed"  # refused by load shedding before anything else ran
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BREAKER_VALUE = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
# Requests by app version (gateway.edge.appversion); "_total" is added when exposed.
APP_VERSION_METRIC = "relay_gateway_requests_by_app_version"
# What a degraded answer of these routes stands for in the critical input/output metrics.
LOADS_ROUTE = "/loads"
VERIFY_ROUTE = "/gatepass/verify"


def status_class(status: int) -> str:
    return _CLASSES[status // 100 - 1] if 100 <= status < 600 else "5xx"


class RequestMetrics:
    """Counts and latencies per request, in plain dicts (see the module docstring)."""

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        # (module, unit, route, outcome, code) -> requests
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        # (module, outcome) -> [count per bucket (+Inf last), sum of seconds]
        self.latency: dict[tuple[str, str], list[float]] = {}
        # the newest request: (module, outcome, seconds); in Lambda, the invocation's own
        self.last: tuple[str, str, float] | None = None
        # app version label ("5.2", "none", "invalid", "older-than-min", "other") -> requests,
        # counted by gateway.edge.appversion; and the newest request's, for Lambda's EMF
        self.app_versions: dict[str, int] = {}
        self.last_app_version: str | None = None

    def record(
        self, module: str, unit: str, route: str, outcome: str, status: int, seconds: float
    ) -> None:
        key = (module, unit, route, outcome, status_class(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        series = self.latency.get((module, outcome))
        if series is None:
            series = self.latency[(module, outcome)] = [0.0] * (len(self.buckets) + 2)
        series[bisect_left(self.buckets, seconds)] += 1
        series[-1] += seconds
        self.last = (module, outcome, seconds)

    def summary(self) -> list[dict[str, Any]]:
        """Cumulative counts by module, unit and outcome (the dashboard's rates)."""
        out: dict[tuple[str, str, str], int] = {}
        for (module, unit, _route, outcome, _code), count in self.requests.items():
            out[(module, unit, outcome)] = out.get((module, unit, outcome), 0) + count
        return [
            {"module": m, "unit": u, "outcome": o, "count": count}
            for (m, u, o), count in sorted(out.items())
        ]

    def total(self, *, route: str, outcomes: Iterable[str] | None = None) -> int:
        wanted = None if outcomes is None else set(outcomes)
        return sum(
            count
            for (_m, _u, r, outcome, code), count in self.requests.items()
            if r == route and code == "2xx" and (wanted is None or outcome in wanted)
        )


class GatewayCollector(Collector):
    """Everything ``/metrics`` shows, read when scraped. ``upstreams`` gives every upstream
    the instance can call now (its modules and cells, canaries, peer regions'); ``shedder``
    and ``levers`` are the app's, where it has them."""

    def __init__(
        self,
        requests: RequestMetrics,
        upstreams: Callable[[], Iterable[ModuleUpstream]],
        *,
        shedder: Callable[[], Any] = lambda: None,
        levers: Callable[[], Any] = lambda: None,
    ) -> None:
        self.requests = requests
        self.upstreams = upstreams
        self.shedder = shedder
        self.levers = levers

    def collect(self) -> Iterator[Any]:
        yield from self._requests()
        yield from self._upstreams()
        yield from self._shedding()
        yield from self._levers()

    def _requests(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "relay_gateway_requests",
            "Requests by module, upstream unit, route, outcome and status class.",
            labels=("module", "unit", "route", "outcome", "code"),
        )
        deferred: dict[str, int] = {}
        for key, count in sorted(self.requests.requests.items()):
            requests.add_metric(key, count)
            if key[3] == "deferred" and key[4] == "2xx":
                deferred[key[0]] = deferred.get(key[0], 0) + count
        yield requests
        accepted = CounterMetricFamily(
            "relay_gateway_deferred_accepted",
            "Writes accepted into the deferred queue (202) while their module was unavailable.",
            labels=("module",),
        )
        for module, count in sorted(deferred.items()):
            accepted.add_metric((module,), count)
        yield accepted
        loads = CounterMetricFamily(
            "relay_gateway_loads_served_degraded",
            "Drivers' load lists answered from a fallback (last-known-good copy or the store).",
        )
        loads.add_metric((), self.requests.total(route=LOADS_ROUTE, outcomes=("last-known-good",)))
        yield loads
        verified = CounterMetricFamily(
            "relay_gateway_passes_verified_offline",
            "Gate passes verified by the gateway itself (offline) while gatepass was unavailable.",
        )
        verified.add_metric((), self.requests.total(route=VERIFY_ROUTE, outcomes=("static",)))
        yield verified
        latency = HistogramMetricFamily(
            "relay_gateway_request_duration_seconds",
            "Time from the forward's start to the answer, by module and outcome.",
            labels=("module", "outcome"),
            unit="",
        )
        for (module, outcome), series in sorted(self.requests.latency.items()):
            cumulative, buckets = 0.0, []
            for bound, in_bucket in zip(
                (*self.requests.buckets, float("inf")), series[:-1], strict=True
            ):
                cumulative += in_bucket
                buckets.append((_le(bound), cumulative))
            latency.add_metric((module, outcome), buckets, series[-1])
        yield latency
        by_version = CounterMetricFamily(
            APP_VERSION_METRIC,
            "Requests to the mobile API by the caller's app version: major.minor, none (no "
            "version sent), invalid (400), older-than-min (426), other (past the first 32).",
            labels=("app_version",),
        )
        for label, count in sorted(self.requests.app_versions.items()):
            by_version.add_metric((label,), count)
        yield by_version

    def _upstreams(self) -> Iterator[Any]:
        state = GaugeMetricFamily(
            "relay_gateway_breaker_state",
            "Each upstream's breaker: 0 closed, 1 half-open, 2 open.",
            labels=("unit",),
        )
        transitions = CounterMetricFamily(
            "relay_gateway_breaker_transitions",
            "Breaker transitions by the state entered.",
            labels=("unit", "state"),
        )
        in_use = GaugeMetricFamily(
            "relay_gateway_bulkhead_in_use", "Calls in flight to the upstream.", labels=("unit",)
        )
        limit = GaugeMetricFamily(
            "relay_gateway_bulkhead_limit",
            "Calls the upstream's bulkhead lets in at once.",
            labels=("unit",),
        )
        tokens = GaugeMetricFamily(
            "relay_gateway_retry_budget_tokens",
            "Retries the upstream's budget would allow now.",
            labels=("unit",),
        )
        for upstream in sorted(self.upstreams(), key=lambda u: u.name):
            unit = upstream.name
            breaker = upstream.breaker
            state.add_metric((unit,), _BREAKER_VALUE.get(breaker.state.value, 2.0))
            entered: dict[str, int] = {}
            for transition, count in breaker.transitions.items():
                to = transition.rpartition("->")[2]
                entered[to] = entered.get(to, 0) + count
            for to, count in sorted(entered.items()):
                transitions.add_metric((unit, to), count)
            in_use.add_metric((unit,), upstream.bulkhead.in_flight)
            limit.add_metric((unit,), upstream.bulkhead.config.max_concurrent)
            tokens.add_metric((unit,), upstream.budget.available())
        yield from (state, transitions, in_use, limit, tokens)

    def _shedding(self) -> Iterator[Any]:
        shedder = self.shedder()
        if shedder is None:
            return
        shed = CounterMetricFamily(
            "relay_gateway_shed", "Requests refused by load shedding, by tier.", labels=("tier",)
        )
        for tier, count in sorted(shedder.shed.items()):
            shed.add_metric((tier,), count)
        yield shed
        in_flight = GaugeMetricFamily(
            "relay_gateway_in_flight", "Requests this gateway process is handling now."
        )
        in_flight.add_metric((), shedder.in_flight)
        yield in_flight

    def _levers(self) -> Iterator[Any]:
        levers = self.levers()
        if levers is None:
            return
        active = GaugeMetricFamily(
            "relay_gateway_levers_active", "Emergency levers in force, by type.", labels=("type",)
        )
        counts: dict[str, int] = {}
        for lever in levers.active():
            kind = str(getattr(lever, "type", "unknown"))
            counts[kind] = counts.get(kind, 0) + 1
        for kind, count in sorted(counts.items()):
            active.add_metric((kind,), count)
        yield active


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def registry(collector: GatewayCollector) -> CollectorRegistry:
    """A registry of this app's own (never prometheus-client's global one: a process may
    build several apps, e.g. tests)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg


def summary(collector: GatewayCollector, instance: str) -> dict[str, Any]:
    """``GET /ops/metrics/summary``: what the operators' dashboard charts, as JSON."""
    shedder = collector.shedder()
    return {
        "at": time.time(),
        "instance": instance,
        "requests": collector.requests.summary(),
        "breakers": {u.name: u.breaker.state.value for u in collector.upstreams()},
        "in_flight": getattr(shedder, "in_flight", None),
        "shed": dict(getattr(shedder, "shed", {}) or {}),
    }


def emit_last(metrics: RequestMetrics, service: str = "gateway") -> None:
    """In Lambda, where nothing scrapes ``/metrics``: the invocation's request as EMF on
    stdout (CloudWatch makes the metrics of it), under the names ``/metrics`` uses, with
    ``module`` and ``outcome`` as dimensions (one request per invocation)."""
    if metrics.last is None:
        return
    module, outcome, seconds = metrics.last
    metrics.last = None
    emf = Metrics(provider=AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=service))
    emf.add_dimension("module", module)
    emf.add_dimension("outcome", outcome)
    emf.add_metric("relay_gateway_requests_total", MetricUnit.Count, 1)
    emf.add_metric("relay_gateway_request_duration_seconds", MetricUnit.Seconds, seconds)
    emf.flush_metrics()
    label, metrics.last_app_version = metrics.last_app_version, None
    if label is not None:  # its own line: its dimension is not the requests' alarms' set
        by_version = Metrics(
            provider=AmazonCloudWatchEMFProvider(namespace=NAMESPACE, service=service)
        )
        by_version.add_dimension("app_version", label)
        by_version.add_metric(APP_VERSION_METRIC + "_total", MetricUnit.Count, 1)
        by_version.flush_metrics()
