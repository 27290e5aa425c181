"""What one call of the synthetic load got: live, degraded or failed, and its function.

A call is *live* when the module answered it (2xx without ``Relay-Degraded``), *degraded*
when the gateway answered it for the module (2xx with ``Relay-Degraded``, or 202: the
write is queued), *failed* otherwise (5xx, a timeout, a lost connection, and any other
answer the app cannot use, such as 4xx). The matrix shows, per scenario and function, the
worst outcome seen and its share of that function's calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from shared_contracts.headers import DEGRADED


class Outcome(IntEnum):
    """Ordered from best to worst: the worst seen is the matrix cell."""

    LIVE = 0
    DEGRADED = 1
    FAILED = 2

    @property
    def label(self) -> str:
        return self.name.lower()


class Function(StrEnum):
    """The critical functions of a driver's day (the matrix's columns), and dispatch's."""

    LOADS_READ = "loads read"
    EVENT_WRITE = "event write"
    GATEPASS = "gate pass issue/read"
    GATEPASS_VERIFY = "gate pass verify"
    NAVIGATE = "navigate"
    MESSAGE = "message"
    ASSIGN = "load assign"


# Which module serves each function (isolation: a fault in one module leaves the others' live).
MODULE_OF: dict[Function, str] = {
    Function.LOADS_READ: "loads",
    Function.EVENT_WRITE: "loads",
    Function.ASSIGN: "loads",
    Function.GATEPASS: "gatepass",
    Function.GATEPASS_VERIFY: "gatepass",
    Function.NAVIGATE: "navigate",
    Function.MESSAGE: "message",
}
# What must always be answered (live or degraded), whatever is down.
CRITICAL: tuple[Function, ...] = (
    Function.LOADS_READ,
    Function.EVENT_WRITE,
    Function.GATEPASS,
    Function.GATEPASS_VERIFY,
)


def classify(status: int | None, headers: Mapping[str, str] | None = None) -> Outcome:
    """``status`` None: no answer at all (a timeout, a refused or lost connection)."""
    if status is None or not 200 <= status < 300:
        return Outcome.FAILED
    if status == 202:
        return Outcome.DEGRADED
    if headers is not None and any(k.lower() == DEGRADED.lower() for k in headers):
        return Outcome.DEGRADED
    return Outcome.LIVE


@dataclass(frozen=True)
class Call:
    """One call of the synthetic load, as recorded."""

    function: Function
    status: int | None  # None: no answer
    outcome: Outcome
    seconds: float
    error: str = ""  # the exception's name without an answer; a problem answer's code
    detail: str = ""  # a problem answer's detail


@dataclass
class Tally:
    """One function's calls by outcome."""

    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    statuses: dict[str, int] = field(default_factory=dict)  # "200", "503", "ReadTimeout" ...
    examples: dict[str, str] = field(default_factory=dict)  # a failure's detail, by status
    seconds: list[float] = field(default_factory=list, repr=False)  # each call's
    _p95: float | None = field(default=None, repr=False)  # as read back from JSON

    def add(self, call: Call) -> None:
        self.counts[call.outcome] += 1
        self.seconds.append(call.seconds)
        if call.status is None:
            key = call.error or "no answer"
        else:  # a problem answer with its code: "503 unavailable"
            key = f"{call.status} {call.error}".strip()
        if call.outcome is Outcome.FAILED and key not in self.examples:
            self.examples[key] = call.detail
        self.statuses[key] = self.statuses.get(key, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def worst(self) -> Outcome | None:
        seen = [o for o, n in self.counts.items() if n]
        return max(seen) if seen else None

    def share(self, outcome: Outcome) -> float:
        return self.counts[outcome] / self.total if self.total else 0.0

    @property
    def p95_seconds(self) -> float | None:
        """The 95th percentile of the calls' durations (answered or not)."""
        if not self.seconds:
            return self._p95
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]

    @property
    def answered(self) -> int:
        return self.counts[Outcome.LIVE] + self.counts[Outcome.DEGRADED]

    def cell(self) -> str:
        """``live 100%``, ``degraded 38%``, ``failed 2% (3/150)``; ``-`` with no calls."""
        worst = self.worst
        if worst is None:
            return "-"
        n = self.counts[worst]
        text = f"{worst.label} {_percent(n / self.total)}"
        return text if worst is Outcome.LIVE else f"{text} ({n}/{self.total})"

    def to_json(self) -> dict:
        return {
            "calls": self.total,
            **{o.label: n for o, n in self.counts.items()},
            "worst": self.worst.label if self.worst is not None else None,
            "statuses": dict(sorted(self.statuses.items())),
            "p95_seconds": self.p95_seconds,
            "examples": dict(sorted(self.examples.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Tally:
        tally = cls()
        for o in Outcome:
            tally.counts[o] = int(data.get(o.label, 0))
        tally.statuses = dict(data.get("statuses", {}))
        tally._p95 = data.get("p95_seconds")
        tally.examples = dict(data.get("examples", {}))
        return tally

    def unusual(self) -> str:
        """The answers other than 200 and 201, e.g. ``202 x4, 503 x1``."""
        return ", ".join(
            f"{k} x{n}" for k, n in sorted(self.statuses.items()) if k not in ("200", "201")
        )


def tally(calls: Iterable[Call]) -> dict[Function, Tally]:
    out = {f: Tally() for f in Function}
    for call in calls:
        out[call.function].add(call)
    return out


def _percent(share: float) -> str:
    """Whole percents, never rounding a share that is not all or nothing to 0% or 100%."""
    pct = share * 100
    if 0 < pct < 1:
        return "<1%"
    if 99 < pct < 100:
        return ">99%"
    return f"{pct:.0f}%"
