"""The local stand-in for CloudWatch's EMF extraction: metrics from ``.relay/logs/*.log``.

In AWS, CloudWatch Logs turns every Embedded Metric Format line a function writes into
metrics (namespace ``Relay``; docs/operations.md, Metrics). Locally the same lines land in
the processes' log files (``relay dev`` writes each process's stdout to
``.relay/logs/<process>.log``); this module reads them and keeps the totals:

- a ``Count`` metric (every ``*_total``) is summed;
- any other unit (the ``*_seconds`` observations) keeps ``count``, ``sum``, ``max`` and
  ``p50``/``p90``/``p99`` over its newest :data:`RESERVOIR` observations,

per metric name and dimension set (the ``Dimensions`` CloudWatch would make of the line).

Reading is incremental: each file's offset is remembered, so a poll reads only what was
appended since the last one. A line still being written (no newline yet) is read on a
later poll, whole. A file that shrank (the stack started afresh) is read again from its
start. Lines that are not EMF (the ordinary log lines) are skipped on a substring test
before any JSON is parsed.

``collect(log_dir)`` polls one reader per directory, kept for the process's life, and
returns its snapshot (:meth:`EmfReader.poll`)::

    {
      "updated_at": 1796395224.6,        # time.time() of this poll
      "files": 9,                         # *.log files read
      "lines": 1840,                      # EMF lines counted so far
      "skipped": 0,                       # lines that looked like EMF but did not parse
      "totals": {                         # per metric name, summed over its dimensions
        "relay_loads_assignments_created_total": 12.0, ...
      },
      "series": [                         # one per metric name and dimension set
        {"name": "relay_loads_events_applied_total", "unit": "Count",
         "dimensions": {"service": "loads", "via": "live"}, "sum": 40.0,
         "last_ms": 1796395224605},
        {"name": "relay_loads_assignment_seen_delay_seconds", "unit": "Seconds",
         "dimensions": {"service": "loads"}, "count": 12, "sum": 181.2, "max": 61.0,
         "p50": 9.5, "p90": 40.1, "p99": 61.0, "last_ms": 1796395224605},
        ...
      ]
    }

``totals`` sums a counter over all its dimension sets (every ``via``, every service); for
an observation it is the ``count``. Series are sorted by name, then dimensions. The
numbers are cumulative since the reader started: a chart takes the difference between two
polls for a rate.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COUNT_UNIT = "Count"
RESERVOIR = 1000  # observations kept per series for its percentiles
MAX_READ_BYTES = 8 * 1024 * 1024  # per file and poll: a huge file is caught up over polls
_MARKER = b'"_aws"'
_readers: dict[Path, EmfReader] = {}
_readers_lock = threading.Lock()


@dataclass
class Series:
    """One metric name with one dimension set."""

    name: str
    unit: str
    dimensions: dict[str, str]
    count: int = 0
    sum: float = 0.0
    max: float = -math.inf
    last_ms: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=RESERVOIR))

    def add(self, values: list[float], at_ms: int) -> None:
        self.count += len(values)
        self.sum += sum(values)
        self.max = max(self.max, *values)
        self.last_ms = max(self.last_ms, at_ms)
        if self.unit != COUNT_UNIT:
            self.recent.extend(values)

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "unit": self.unit,
            "dimensions": self.dimensions,
            "sum": round(self.sum, 6),
        }
        if self.unit != COUNT_UNIT:
            ordered = sorted(self.recent)
            out["count"] = self.count
            out["max"] = self.max
            for label, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
                out[label] = percentile(ordered, q)
        out["last_ms"] = self.last_ms
        return out


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``ordered`` (sorted), None when empty."""
    if not ordered:
        return None
    rank = max(math.ceil(q * len(ordered)), 1)
    return ordered[rank - 1]


class EmfReader:
    """Reads the EMF lines appended to ``log_dir``'s ``*.log`` files since its last poll."""

    def __init__(self, log_dir: Path, *, max_read_bytes: int = MAX_READ_BYTES) -> None:
        self.log_dir = Path(log_dir)
        self.max_read_bytes = max_read_bytes
        self.offsets: dict[Path, int] = {}
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], Series] = {}
        self.lines = 0
        self.skipped = 0
        self._lock = threading.Lock()

    def poll(self) -> dict[str, Any]:
        """Read what was appended, then the snapshot (module docstring)."""
        with self._lock:
            files = sorted(self.log_dir.glob("*.log")) if self.log_dir.is_dir() else []
            for path in files:
                self._read(path)
            return self._snapshot(len(files))

    def _read(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            offset = self.offsets.get(path, 0)
            if size < offset:  # truncated or replaced: read it again from the start
                offset = 0
            if size == offset:
                return
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read(min(size - offset, self.max_read_bytes))
        except OSError:
            return
        end = chunk.rfind(b"\n") + 1  # complete lines only; the rest on a later poll
        if end == 0 and len(chunk) >= self.max_read_bytes:
            end = len(chunk)  # one line longer than a whole read: not EMF, skip it
        self.offsets[path] = offset + end
        for line in chunk[:end].splitlines():
            if _MARKER in line:
                self.add_line(line)

    def add_line(self, line: bytes | str) -> bool:
        """Count one EMF line; False (and counted as skipped) if it is not one."""
        try:
            record = json.loads(line)
            directives = record["_aws"]["CloudWatchMetrics"]
            at_ms = int(record["_aws"].get("Timestamp", 0))
            found = []
            for directive in directives:
                for dimension_set in directive.get("Dimensions") or [[]]:
                    dims = tuple(sorted((str(d), str(record[d])) for d in dimension_set))
                    for metric in directive["Metrics"]:
                        name = metric["Name"]
                        values = _values(record[name])
                        if values:
                            unit = str(metric.get("Unit") or "None")
                            found.append((name, unit, dims, values))
        except (ValueError, KeyError, TypeError, AttributeError):
            self.skipped += 1
            return False
        for name, unit, dims, values in found:
            series = self.series.get((name, dims))
            if series is None:
                series = self.series[(name, dims)] = Series(name, unit, dict(dims))
            series.add(values, at_ms)
        self.lines += 1
        return True

    def _snapshot(self, files: int) -> dict[str, Any]:
        totals: dict[str, float] = {}
        for series in self.series.values():
            part = series.sum if series.unit == COUNT_UNIT else series.count
            totals[series.name] = totals.get(series.name, 0) + part
        ordered = sorted(self.series.values(), key=lambda s: (s.name, sorted(s.dimensions.items())))
        return {
            "updated_at": time.time(),
            "files": files,
            "lines": self.lines,
            "skipped": self.skipped,
            "totals": dict(sorted(totals.items())),
            "series": [s.view() for s in ordered],
        }


def _values(raw: Any) -> list[float]:
    items = raw if isinstance(raw, list) else [raw]
    values = [float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    return [v for v in values if math.isfinite(v)]


def collect(log_dir: Path) -> dict[str, Any]:
    """The metrics in ``log_dir``'s logs so far: one reader per directory, polled now."""
    key = Path(log_dir).resolve()
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = EmfReader(key)
    return reader.poll()


__all__ = ["EmfReader", "Series", "collect", "percentile"]
