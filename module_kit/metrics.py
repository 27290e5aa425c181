"""The modules' own metrics, as CloudWatch Embedded Metric Format (EMF) lines on stdout.

Each metric is written the moment it happens, as one EMF JSON line built by Powertools'
CloudWatch EMF provider (namespace :data:`NAMESPACE`, dimension ``service`` = the module's
name, plus the metric's labels as dimensions). In Lambda, CloudWatch Logs turns the line
into the metric; locally the module's process writes it to ``.relay/logs/<process>.log``
and :mod:`relay.emf` reads it from there. Nothing is buffered, so nothing needs flushing
at the end of a request or an invocation, under uvicorn or Lambda alike.

A metric never breaks the work it counts: a failure to build or write a line is logged
once per process and dropped. ``POWERTOOLS_METRICS_DISABLED`` (Powertools' own switch)
turns every line off.

The names (Prometheus conventions, the same as the gateway's; docs/operations.md,
Metrics):

- :data:`REQUESTS` ``{route, code}``: every answer of a module (``route`` is the route
  template, ``code`` the status class, ``2xx`` .. ``5xx``), written by
  :class:`module_kit.http.RequestLog`;
- the critical input/output counters, each where its event happens:
  loads' assignments created and first seen live (with the delay between),
  loads' events accepted on a live call and applied (``via`` live or replay),
  notifications enqueued (loads, message), delivered and dead-lettered (the worker),
  gate passes issued and verified.

A replayed deferred write carries :data:`REPLAY_HEADER` (set by the gateway's replayer;
the gateway never forwards a client's ``x-relay-*`` headers), so a module counts what it
applies from the queue under ``via="replay"``: :class:`module_kit.http.RequestLog` binds
the request's way in (:func:`bind_via`) and the service reads it (:func:`current_via`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from functools import lru_cache
from typing import IO, Any

log = logging.getLogger("relay.metrics")

NAMESPACE = "Relay"
COUNT = "Count"
SECONDS = "Seconds"

# Every module: its answers, by route template and status class.
REQUESTS = "relay_module_requests_total"
# The critical input/output counters.
ASSIGNMENTS_CREATED = "relay_loads_assignments_created_total"
ASSIGNMENTS_SEEN = "relay_loads_assignments_seen_total"
ASSIGNMENT_SEEN_DELAY = "relay_loads_assignment_seen_delay_seconds"
EVENTS_ACCEPTED = "relay_loads_events_accepted_total"
EVENTS_APPLIED = "relay_loads_events_applied_total"
NOTIFICATIONS_ENQUEUED = "relay_notifications_enqueued_total"
NOTIFICATIONS_DELIVERED = "relay_notifications_delivered_total"
NOTIFICATIONS_DEAD_LETTERED = "relay_notifications_dead_lettered_total"
PASSES_ISSUED = "relay_gatepass_passes_issued_total"
PASSES_VERIFIED = "relay_gatepass_passes_verified_total"

VIA = "via"
VIA_LIVE = "live"
VIA_REPLAY = "replay"
REPLAY_HEADER = "x-relay-replay"
_REPLAY_HEADER_BYTES = REPLAY_HEADER.encode()
_via: contextvars.ContextVar[str] = contextvars.ContextVar("relay_via", default=VIA_LIVE)

_write_lock = threading.Lock()  # one line per write, whatever thread is answering
_failed = {"logged": False}


def status_class(status: int) -> str:
    """``"2xx"`` for 204, ``"5xx"`` for 503 (anything outside 100-599 is a ``"5xx"``)."""
    return f"{status // 100}xx" if 100 <= status < 600 else "5xx"


class ModuleMetrics:
    """A module's metric writer: ``service`` is its name (``loads`` in every cell and
    region, so alarms and the dashboard see one series per label set). ``stream`` is where
    lines go; by default whatever ``sys.stdout`` is when a line is written."""

    def __init__(self, service: str, *, stream: IO[str] | None = None) -> None:
        self.service = service
        self.stream = stream

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        """Add ``value`` to the counter ``name`` with ``labels``."""
        self.emit(name, value, COUNT, labels)

    def seconds(self, name: str, value: float, **labels: str) -> None:
        """Record one observation of ``value`` seconds under ``name``."""
        self.emit(name, value, SECONDS, labels)

    def emit(self, name: str, value: float, unit: str, labels: dict[str, str]) -> None:
        """One EMF line; never raises."""
        try:
            line = self._line(name, value, unit, labels)
            if line is None:
                return
            stream = self.stream if self.stream is not None else sys.stdout
            with _write_lock:
                stream.write(line)
                stream.flush()
        except Exception:
            if not _failed["logged"]:
                _failed["logged"] = True
                log.exception("could not write the metric %s (further failures are silent)", name)

    def _line(self, name: str, value: float, unit: str, labels: dict[str, str]) -> str | None:
        provider_class, disabled = _powertools()
        if disabled():
            return None
        # A provider per line: its metric set is this line's, whatever else uses Metrics.
        provider = provider_class(namespace=NAMESPACE, service=self.service)
        for key, label in labels.items():
            provider.add_dimension(key, label)
        provider.add_metric(name, unit, value)
        metrics: dict[str, Any] = provider.serialize_metric_set()
        return json.dumps(metrics, separators=(",", ":")) + "\n"


@lru_cache(maxsize=1)
def _powertools() -> tuple[Any, Any]:
    """Powertools' EMF provider and its off switch, imported on the first metric (the
    gateway imports module_kit.http, which counts module answers, without Powertools)."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
        AmazonCloudWatchEMFProvider,
    )

    return AmazonCloudWatchEMFProvider, is_metrics_disabled


def via_of(headers: list[tuple[bytes, bytes]]) -> str:
    """``"replay"`` for a write the gateway's replayer delivers from the deferred queue
    (ASGI ``headers`` carrying :data:`REPLAY_HEADER`), ``"live"`` otherwise."""
    for name, _ in headers:
        if name == _REPLAY_HEADER_BYTES:
            return VIA_REPLAY
    return VIA_LIVE


def bind_via(via: str) -> contextvars.Token[str]:
    """The request being handled came in ``via`` (``live`` or ``replay``)."""
    return _via.set(via)


def unbind_via(token: contextvars.Token[str]) -> None:
    _via.reset(token)


def current_via() -> str:
    """How the request being handled came in; ``"live"`` outside a request."""
    return _via.get()
