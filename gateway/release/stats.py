"""Each version's calls during a release, counted by every gateway instance and summed in
the control table, where the release controller judges the canary against the stable
version over the same seconds.

A gateway instance counts each call it makes to either version of a module under release
(:meth:`ReleaseStats.record`): the call, whether it failed (5xx, timeout, unreachable,
its breaker open or its bulkhead full: the version gave no answer; a 4xx is an answer) and
its latency in a histogram of fixed buckets (each 20% wider than the one before), per epoch
second. It adds its counts to the control table every ``flush_seconds`` in the background
(``kind = "release-stats"``, ``name`` = ``<release id>#<version>#<second>``, one atomic
``ADD`` per item), so the store holds the fleet's sums whichever instances served the calls,
and a p99 can be read from the summed histogram. A flush that fails is logged and its
counts dropped: the stats judge a release, they are never a promise to a driver.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import aws_calls

log = logging.getLogger("relay.gateway.release")

BUCKET_BASE_MS = 0.5  # bucket 0: up to half a millisecond
BUCKET_GROWTH = 1.2  # each bucket's upper bound is 20% above the previous one
MAX_BUCKET = 80  # 0.5 ms x 1.2^80: about 18 minutes, more than any deadline
STATS_TTL_SECONDS = 7 * 86_400
DEFAULT_FLUSH_SECONDS = 0.5


def bucket_upper_ms(index: int) -> float:
    return float(BUCKET_BASE_MS * BUCKET_GROWTH**index)


_UPPER_BOUNDS = [bucket_upper_ms(i) for i in range(MAX_BUCKET + 1)]


def bucket(ms: float) -> int:
    """The histogram bucket of a latency: the first whose upper bound is at least ``ms``
    (a binary search of the bounds, in C: this runs on every call during a release)."""
    return min(bisect_left(_UPPER_BOUNDS, ms), MAX_BUCKET)


@dataclass
class VersionStats:
    """One version's calls over some seconds."""

    calls: int = 0
    failures: int = 0  # 5xx, timeouts, connection errors, breaker open (4xx are answers)
    histogram: dict[int, int] = field(default_factory=dict)  # bucket index -> calls

    @property
    def success_rate(self) -> float | None:
        return None if self.calls == 0 else 1 - self.failures / self.calls

    def percentile(self, q: float) -> float | None:
        """The upper bound (ms) of the bucket that holds the ``q`` quantile of the calls."""
        total = sum(self.histogram.values())
        if total == 0:
            return None
        rank = math.ceil(q * total)
        seen = 0
        for index in sorted(self.histogram):
            seen += self.histogram[index]
            if seen >= rank:
                return bucket_upper_ms(index)
        return bucket_upper_ms(max(self.histogram))

    def merged(self, other: VersionStats) -> VersionStats:
        histogram = dict(self.histogram)
        for index, count in other.histogram.items():
            histogram[index] = histogram.get(index, 0) + count
        return VersionStats(self.calls + other.calls, self.failures + other.failures, histogram)

    def add(self, ok: bool, ms: float) -> None:
        self.calls += 1
        self.failures += not ok
        index = bucket(ms)
        self.histogram[index] = self.histogram.get(index, 0) + 1

    def view(self) -> dict[str, Any]:
        rate = self.success_rate
        p99 = self.percentile(0.99)
        return {
            "calls": self.calls,
            "failures": self.failures,
            "success_rate": None if rate is None else round(rate, 4),
            "p99_ms": None if p99 is None else round(p99, 1),
        }


class StatsSink(Protocol):
    """Where a gateway adds its per-second counts (it never reads them back)."""

    def add(self, release_id: str, version: str, second: int, stats: VersionStats) -> None: ...


class StatsStore(StatsSink, Protocol):
    """Where the fleet's per-second counts are summed, as the controller reads them."""

    def window(self, release_id: str, version: str, start: float, end: float) -> VersionStats: ...


def _name(release_id: str, version: str, second: int) -> str:
    return f"{release_id}#{version}#{second:010d}"


class ControlTableStats(aws_calls.DynamoTable):
    """The counts in the control table: ``kind = "release-stats"``; numbers ``calls``,
    ``failures`` and ``b<bucket>`` per histogram bucket, each added atomically."""

    KIND = "release-stats"

    def add(self, release_id: str, version: str, second: int, stats: VersionStats) -> None:
        names = {"#c": "calls", "#f": "failures"}
        values: dict[str, Any] = {
            ":c": stats.calls,
            ":f": stats.failures,
            ":ttl": second + STATS_TTL_SECONDS,
        }
        adds = ["#c :c", "#f :f"]
        for index, count in stats.histogram.items():
            names[f"#b{index}"] = f"b{index}"
            values[f":b{index}"] = count
            adds.append(f"#b{index} :b{index}")
        self.table.update_item(
            Key={"kind": self.KIND, "name": _name(release_id, version, second)},
            UpdateExpression="ADD " + ", ".join(adds) + " SET expires_at = :ttl",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def window(self, release_id: str, version: str, start: float, end: float) -> VersionStats:
        """The sum of every second in ``[start, end)``."""
        first, last = math.ceil(start), math.ceil(end) - 1
        out = VersionStats()
        if last < first:
            return out
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "kind = :k AND #n BETWEEN :lo AND :hi",
            "ExpressionAttributeNames": {"#n": "name"},
            "ExpressionAttributeValues": {
                ":k": self.KIND,
                ":lo": _name(release_id, version, first),
                ":hi": _name(release_id, version, last),
            },
            "ConsistentRead": True,
        }
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                histogram = {
                    int(k[1:]): int(v) for k, v in item.items() if k[:1] == "b" and k[1:].isdigit()
                }
                second = VersionStats(
                    int(item.get("calls", 0)), int(item.get("failures", 0)), histogram
                )
                out = out.merged(second)
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class ReleaseStats:
    """One gateway instance's counts, added to the store every ``flush_seconds`` (started
    from the request path, run on the AWS thread pool with a deadline, never awaited)."""

    def __init__(
        self,
        store: StatsSink | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        timeout_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.wall_clock = wall_clock
        self.flush_seconds = flush_seconds
        self.timeout_seconds = timeout_seconds
        # (module, release id, version, epoch second) -> the calls not yet flushed
        self.pending: dict[tuple[str, str, str, int], VersionStats] = {}
        self._flushed: dict[tuple[str, str], VersionStats] = {}  # (module, version): sent
        self.flush_errors = 0
        self._flush_due = wall_clock() + flush_seconds
        self._flushing: asyncio.Future[None] | None = None

    def record(self, module: str, release_id: str, version: str, ok: bool, ms: float) -> None:
        """One call to ``version``: whether it gave an answer, and how long it took."""
        now = self.wall_clock()
        key = (module, release_id, version, int(now))
        stats = self.pending.get(key)
        if stats is None:
            stats = self.pending[key] = VersionStats()
        stats.add(ok, ms)
        if now >= self._flush_due and self._flushing is None:
            self._flush_in_background()

    @property
    def totals(self) -> dict[tuple[str, str], VersionStats]:
        """This instance's calls per (module, version) since it started."""
        out = dict(self._flushed)
        for (module, _, version, _), stats in self.pending.items():
            key = (module, version)
            out[key] = out[key].merged(stats) if key in out else stats.merged(VersionStats())
        return out

    def flush(self) -> None:
        """Add everything counted so far to the store (synchronous)."""
        self._write(self._take())

    def _take(self) -> dict[tuple[str, str, str, int], VersionStats]:
        """The counts so far, taken on the event loop's thread (records land in a new dict),
        and added to this instance's totals."""
        pending, self.pending = self.pending, {}
        for (module, _, version, _), stats in pending.items():
            key = (module, version)
            self._flushed[key] = stats.merged(self._flushed.get(key, VersionStats()))
        return pending

    def _write(self, pending: dict[tuple[str, str, str, int], VersionStats]) -> None:
        if self.store is None:
            return
        for (_, release_id, version, second), stats in pending.items():
            self.store.add(release_id, version, second, stats)

    def _flush_in_background(self) -> None:
        self._flush_due = self.wall_clock() + self.flush_seconds
        pending = self._take()

        def done(future: asyncio.Future[None]) -> None:
            self._flushing = None
            if not future.cancelled() and future.exception() is not None:
                self.flush_errors += 1
                log.error("could not add release stats (%r); dropped", future.exception())

        self._flushing = asyncio.ensure_future(
            aws_calls.call(
                self._write, pending, timeout=self.timeout_seconds * 4, what="control table"
            )
        )
        self._flushing.add_done_callback(done)

    def view(self, module: str) -> dict[str, Any]:
        return {v: s.view() for (m, v), s in sorted(self.totals.items()) if m == module}
