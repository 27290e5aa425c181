"""The console's memory: the last minutes of the gateways' request counts, as rates.

The gateway counts requests cumulatively, per instance (``GET /ops/metrics/summary``:
``requests`` by module, unit and outcome, and the ``instance`` that answered). Behind a
balancer every poll may reach another instance, and an instance that restarts counts from
zero again, so :class:`Totals` keeps each instance's last counts and adds only what grew:
fleet-wide totals that never go down. :class:`History` keeps one :class:`Sample` of those
totals (and the breakers' states) per poll for ``window_seconds`` (a ring buffer) and turns
successive samples into rates per unit: live, degraded, failed.

A gateway without the summary endpoint is read from ``/ops/status`` instead
(:func:`counts_from_status`): its breakers' calls and failures, fallbacks served and
requests left unavailable, one instance's counts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_HISTORY_SECONDS = 600.0  # what the charts show when the page opens: 10 minutes

# Each outcome the gateway counts, by what it meant to the driver.
LIVE, DEGRADED, FAILED, REFUSED = "live", "degraded", "failed", "refused"
GROUPS = (LIVE, DEGRADED, FAILED)  # charted; REFUSED (the gateway's own 4xx) is counted aside
OUTCOME_GROUPS: dict[str, str] = {
    "live": LIVE,
    "last-known-good": DEGRADED,
    "static": DEGRADED,
    "deferred": DEGRADED,
    "unavailable": FAILED,
    "shed": FAILED,
    "refused": REFUSED,
}

# (module, unit, outcome)
Key = tuple[str, str, str]


def group_of(outcome: str) -> str:
    """live, degraded, failed or refused; an outcome the console does not know is failed."""
    return OUTCOME_GROUPS.get(outcome, FAILED)


def counts_from_summary(summary: Mapping[str, Any]) -> dict[Key, int]:
    """``/ops/metrics/summary``'s cumulative request counts, by (module, unit, outcome)."""
    out: dict[Key, int] = {}
    for row in summary.get("requests") or []:
        try:
            key = (str(row["module"]), str(row.get("unit") or row["module"]), str(row["outcome"]))
            out[key] = out.get(key, 0) + int(row["count"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def counts_from_status(status: Mapping[str, Any]) -> dict[Key, int]:
    """Cumulative counts read from ``/ops/status`` (a gateway without the summary): each
    unit's successful upstream calls as live, its fallbacks by kind, its unavailable."""
    out: dict[Key, int] = {}
    modules = status.get("modules") or {}
    for unit, view in modules.items():
        module = str(view.get("module") or unit.split("/", 1)[0])
        breaker = view.get("breaker") or {}
        calls, failures = int(breaker.get("calls") or 0), int(breaker.get("failures") or 0)
        out[(module, unit, "live")] = max(calls - failures, 0)
    for name, count in (status.get("fallbacks_served") or {}).items():
        unit, _, kind = str(name).rpartition(":")
        if unit:
            out[(unit.split("/", 1)[0], unit, kind)] = int(count)
    for unit, count in (status.get("unavailable") or {}).items():
        out[(str(unit).split("/", 1)[0], str(unit), "unavailable")] = int(count)
    return out


def breakers_from_status(status: Mapping[str, Any]) -> dict[str, str]:
    """Each unit's breaker state, as ``/ops/status`` shows it."""
    return {
        unit: str((view.get("breaker") or {}).get("state", "unknown"))
        for unit, view in (status.get("modules") or {}).items()
    }


@dataclass
class Totals:
    """Fleet-wide cumulative counts from each instance's own cumulative counts."""

    total: dict[Key, int] = field(default_factory=dict)
    _last: dict[str, dict[Key, int]] = field(default_factory=dict)

    def add(self, instance: str, counts: Mapping[Key, int]) -> None:
        """Count what grew since ``instance`` was last read. An instance read for the first
        time sets its baseline (its counts from before the console watched are not a burst
        now); a count that went down means the instance restarted and counts from zero."""
        last = self._last.get(instance)
        if last is not None:
            for key, value in counts.items():
                before = last.get(key, 0)
                grew = value - before if value >= before else value
                if grew:
                    self.total[key] = self.total.get(key, 0) + grew
        self._last[instance] = dict(counts)

    @property
    def instances(self) -> list[str]:
        return sorted(self._last)


@dataclass(frozen=True)
class Sample:
    at: float  # epoch seconds, the console's clock
    totals: dict[Key, int]
    breakers: dict[str, str]


def rates(before: Sample, after: Sample) -> dict[str, dict[str, float]]:
    """Requests per second per unit and group (live, degraded, failed, refused) between
    two samples."""
    seconds = after.at - before.at
    out: dict[str, dict[str, float]] = {}
    if seconds <= 0:
        return out
    for key, value in after.totals.items():
        _, unit, outcome = key
        grew = value - before.totals.get(key, 0)
        row = out.setdefault(unit, dict.fromkeys((*GROUPS, REFUSED), 0.0))
        row[group_of(outcome)] += max(grew, 0) / seconds
    return {unit: {g: round(r, 3) for g, r in row.items()} for unit, row in out.items()}


class History:
    """The ring buffer of samples: one per poll, the last ``window_seconds``."""

    def __init__(self, window_seconds: float = DEFAULT_HISTORY_SECONDS) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window_seconds = window_seconds
        self.totals = Totals()
        self.samples: deque[Sample] = deque()

    def record(
        self,
        at: float,
        instance: str,
        counts: Mapping[Key, int],
        breakers: Mapping[str, str],
    ) -> Sample:
        """One poll's answer: ``instance``'s cumulative counts and the breakers it saw."""
        self.totals.add(instance, counts)
        sample = Sample(at, dict(self.totals.total), dict(breakers))
        self.samples.append(sample)
        while self.samples and self.samples[0].at < at - self.window_seconds:
            self.samples.popleft()
        return sample

    def series(self) -> list[dict[str, Any]]:
        """Each interval between successive samples: its end, rates per unit, breakers."""
        return [
            {"at": round(b.at, 3), "rates": rates(a, b), "breakers": b.breakers}
            for a, b in _pairs(self.samples)
        ]

    def units(self) -> list[str]:
        seen = {unit for s in self.samples for (_, unit, _) in s.totals}
        seen |= {unit for s in self.samples for unit in s.breakers}
        return sorted(seen)


def _pairs(samples: Iterable[Sample]) -> Iterable[tuple[Sample, Sample]]:
    it = iter(samples)
    before = next(it, None)
    for after in it:
        if before is not None:
            yield before, after
        before = after
