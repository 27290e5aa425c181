"""In-memory stand-ins for the release and stats stores, and a simulated fleet that sends
drivers' calls to both versions at the stored weight as simulated time passes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.release.state import Release
from gateway.release.stats import VersionStats, bucket

T0 = 1_800_000_000.0


class MemoryReleases:
    """A ReleaseStore with the control table's conditional writes, recording every
    successful put with the simulated time it happened at."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.items: dict[str, Release] = {}
        self.puts: list[tuple[float, Release]] = []
        self.before_put: Callable[[Release], None] | None = None

    def get(self, module: str) -> Release | None:
        return self.items.get(module)

    def load(self) -> dict[str, Release]:
        return dict(self.items)

    def put(self, release: Release, *, expected_revision: int | None) -> Release | None:
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook(release)
        stored = self.items.get(release.module)
        if (stored is None) != (expected_revision is None):
            return None
        if stored is not None and stored.revision != expected_revision:
            return None
        written = replace(release, revision=(expected_revision or 0) + 1)
        self.items[release.module] = written
        self.puts.append((self.clock(), written))
        return written


class SecondStats:
    """A StatsStore: per-second VersionStats, summed over a window as the control table
    does (every second in [start, end))."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str, int], VersionStats] = {}

    def add(self, release_id: str, version: str, second: int, stats: VersionStats) -> None:
        key = (release_id, version, second)
        self.seconds[key] = self.seconds.get(key, VersionStats()).merged(stats)

    def window(self, release_id: str, version: str, start: float, end: float) -> VersionStats:
        out = VersionStats()
        for second in range(math.ceil(start), math.ceil(end)):
            found = self.seconds.get((release_id, version, second))
            if found is not None:
                out = out.merged(found)
        return out


@dataclass(frozen=True)
class Behaviour:
    """How a version answers: the share of calls that fail and every call's latency."""

    failure_rate: float = 0.0
    latency_ms: float = 20.0


GOOD = Behaviour()


@dataclass
class Fleet:
    """Simulated time and traffic: ``calls_per_second`` drivers' calls each second, the
    stored weight's share of them to the canary. ``canary`` may change with time (a
    version that goes bad). Its ``sleep`` advances the clock and records each sleep;
    every whole second passed is added to the stats when it is complete."""

    calls_per_second: int = 200
    stable: Behaviour = GOOD
    canary: Callable[[float], Behaviour] = lambda _second: GOOD
    module: str = "message"
    now: float = T0
    sleeps: list[float] = field(default_factory=list)
    at: dict[float, Callable[[], None]] = field(default_factory=dict)  # events by time
    releases: MemoryReleases = field(init=False)
    stats: SecondStats = field(default_factory=SecondStats)
    canary_bad_since: float | None = None

    def __post_init__(self) -> None:
        self.releases = MemoryReleases(self.clock)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        end = self.now + seconds
        while self.now < end:
            second = math.floor(self.now)
            step_to = min(end, second + 1.0)
            for when in sorted(t for t in self.at if self.now <= t < step_to):
                self.at.pop(when)()
            self.now = step_to
            if self.now == second + 1.0:
                self._traffic(second)

    def _traffic(self, second: int) -> None:
        release = self.releases.get(self.module)
        if release is None:
            return
        weight = release.weight if release.routing else 0.0
        on_canary = round(self.calls_per_second * weight / 100)
        canary = self.canary(second)
        if on_canary and canary.failure_rate > 0 and self.canary_bad_since is None:
            self.canary_bad_since = float(second)
        self._add(release, release.canary_version, on_canary, canary, second)
        self._add(
            release, release.stable_version, self.calls_per_second - on_canary, self.stable, second
        )

    def _add(self, release: Release, version: str, calls: int, how: Behaviour, second: int) -> None:
        if calls <= 0:
            return
        failures = round(calls * how.failure_rate)
        stats = VersionStats(calls, failures, {bucket(how.latency_ms): calls})
        self.stats.add(release.release_id, version, second, stats)


@dataclass
class CellsFleet(Fleet):
    """A :class:`Fleet` of several units at once (a celled module's cells, each its own
    release item, keyed ``loads/cell-1``): each second every unit with a release gets
    ``calls_per_second`` calls, its canary behaving as ``canaries[unit]`` says."""

    canaries: dict[str, Callable[[float], Behaviour]] = field(default_factory=dict)

    def _traffic(self, second: int) -> None:
        for unit, release in list(self.releases.items.items()):
            weight = release.weight if release.routing else 0.0
            on_canary = round(self.calls_per_second * weight / 100)
            canary = self.canaries.get(unit, lambda _s: GOOD)(second)
            self._add(release, release.canary_version, on_canary, canary, second)
            rest = self.calls_per_second - on_canary
            self._add(release, release.stable_version, rest, self.stable, second)
