"""How a canary release is stepped and judged: step weights, the analysis interval, the
thresholds, and the waits. Validated at construction, so a bad plan fails before any
traffic moves, not halfway through a release."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any

from .exceptions import PolicyError

DEFAULT_STEPS: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0)
DEFAULT_INTERVAL_SECONDS = 60.0
DEFAULT_MIN_CALLS = 50
# A p99 from fewer calls is the slowest call or two (a cold process's first request, one
# GC pause): latency is judged only once both sides have this many calls.
DEFAULT_MIN_LATENCY_CALLS = 100
DEFAULT_MAX_SUCCESS_DROP = 0.01  # points of success rate (0.01 = 1 point) below stable
DEFAULT_MAX_P99_RATIO = 1.5
DEFAULT_MIN_P99_DELTA_MS = 25.0  # a slower p99 fails only when also this much slower
DEFAULT_MIN_SUCCESS_RATE = 0.95  # an absolute floor, whatever stable does
DEFAULT_MAX_QUIET_INTERVALS = 5
DEFAULT_BAKE_SECONDS = 300.0
# A celled module's cells (relay/release/cells.py): the bake and health gate of each cell
# after its promotion, before the next cell's release starts.
DEFAULT_CELL_BAKE_SECONDS = 120.0
TICKS_PER_INTERVAL = 10  # the default tick is a tenth of the interval ...
MIN_TICK_SECONDS = 0.2  # ... but never shorter than this


@dataclass(frozen=True)
class Policy:
    """One module's release settings.

    ``tick_seconds`` is how often the controller reads the stats within an interval (0: a
    tenth of the interval, at least ``MIN_TICK_SECONDS``); a failure is decided at the
    first tick where both versions have ``min_calls``, a pass only at the interval's end.
    Latency (p99) is judged only once both have ``min_latency_calls``; a pass needs it
    judged, so a step waits for that many calls as well.
    ``max_quiet_intervals`` intervals in one step without enough calls to judge roll the
    canary back ("not enough traffic to judge"). ``bake_seconds`` is the wait after a
    promoted stage before the next stage of a plan starts. ``cell_bake_seconds`` is, for a
    celled module, each promoted cell's bake (its health gate watched throughout) before
    the next cell's release starts.
    """

    steps: tuple[float, ...] = DEFAULT_STEPS
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    min_calls: int = DEFAULT_MIN_CALLS
    min_latency_calls: int = DEFAULT_MIN_LATENCY_CALLS
    max_success_drop: float = DEFAULT_MAX_SUCCESS_DROP
    max_p99_ratio: float = DEFAULT_MAX_P99_RATIO
    min_p99_delta_ms: float = DEFAULT_MIN_P99_DELTA_MS
    min_success_rate: float = DEFAULT_MIN_SUCCESS_RATE
    tick_seconds: float = 0.0
    max_quiet_intervals: int = DEFAULT_MAX_QUIET_INTERVALS
    bake_seconds: float = DEFAULT_BAKE_SECONDS
    cell_bake_seconds: float = DEFAULT_CELL_BAKE_SECONDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        if not self.tick_seconds:
            tick = max(self.interval_seconds / TICKS_PER_INTERVAL, MIN_TICK_SECONDS)
            object.__setattr__(self, "tick_seconds", tick)
        for problem in self._problems():
            raise PolicyError(problem)

    def _problems(self) -> list[str]:
        steps = self.steps
        checks = [
            (bool(steps), f"steps must not be empty, got {list(steps)}"),
            (all(0 < s <= 100 for s in steps), f"steps must be in (0, 100], got {list(steps)}"),
            (
                all(a < b for a, b in itertools.pairwise(steps)),
                f"steps must increase, got {list(steps)}",
            ),
            (not steps or steps[-1] == 100, f"the last step must be 100, got {list(steps)}"),
            (
                len(steps) >= 2,
                f"steps need a weight below 100 to judge the canary at, got {list(steps)}",
            ),
            (
                self.interval_seconds >= 1,  # the stats are per second
                f"interval_seconds must be >= 1, got {self.interval_seconds}",
            ),
            (self.min_calls >= 1, f"min_calls must be >= 1, got {self.min_calls}"),
            (
                self.min_latency_calls >= 1,
                f"min_latency_calls must be >= 1, got {self.min_latency_calls}",
            ),
            (
                0 <= self.max_success_drop < 1,
                f"max_success_drop must be in [0, 1), got {self.max_success_drop}",
            ),
            (self.max_p99_ratio >= 1, f"max_p99_ratio must be >= 1, got {self.max_p99_ratio}"),
            (
                self.min_p99_delta_ms >= 0,
                f"min_p99_delta_ms must be >= 0, got {self.min_p99_delta_ms}",
            ),
            (
                0 <= self.min_success_rate <= 1,
                f"min_success_rate must be in [0, 1], got {self.min_success_rate}",
            ),
            (
                0 < self.tick_seconds <= self.interval_seconds,
                f"tick_seconds must be in (0, interval_seconds], got {self.tick_seconds}",
            ),
            (
                self.max_quiet_intervals >= 1,
                f"max_quiet_intervals must be >= 1, got {self.max_quiet_intervals}",
            ),
            (self.bake_seconds >= 0, f"bake_seconds must be >= 0, got {self.bake_seconds}"),
            (
                self.cell_bake_seconds >= 0,
                f"cell_bake_seconds must be >= 0, got {self.cell_bake_seconds}",
            ),
        ]
        return [message for ok, message in checks if not ok]

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """Every setting a plan file may give (its ``[defaults]`` or a stage)."""
        return tuple(f.name for f in fields(cls))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
