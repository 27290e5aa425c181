"""The release controller: steps a module's canary weight and judges it at every step.

``ReleaseController.run(release)`` writes the release at its first step's weight, then at
each step reads both versions' stats over the step's window every tick, judges them
(:func:`~relay.release.analysis.judge`) and reports a :class:`Progress`. A fail rolls the
canary back to 0% at once (within the interval, as soon as both versions have enough
calls); a pass at the interval's end moves to the next step; a pass at the last step makes
the canary the stable version. Every verdict that moves the release is stored with it as
evidence.

Every write is conditional on the revision the controller last wrote: when someone else
changed the release (an operator's rollback, another controller), the controller stops
and says who. A release already in the store with the same id and still running is
resumed at its stored step (the controller was restarted). Time comes from the injected
``clock`` and ``sleep``, so tests drive a whole release without waiting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .analysis import Numbers, Verdict, judge
from .exceptions import ReleaseError
from .policy import Policy

if TYPE_CHECKING:
    from gateway.release.state import Release, ReleaseStore
    from gateway.release.stats import StatsStore, VersionStats

DEFAULT_ACTOR = "relay deploy"
# The gateways flush each second's stats a moment after it ends: the end-of-interval
# verdict waits this long past the interval so its last seconds are in the store.
DEFAULT_STATS_LAG_SECONDS = 2.0
ROLLBACK_ATTEMPTS = 5


@dataclass(frozen=True)
class Progress:
    """What the controller saw at one tick of one step."""

    module: str
    release_id: str
    step: int  # index into steps
    steps: tuple[float, ...]
    weight: float
    stable_version: str
    canary_version: str
    window_start: float  # epoch seconds; the window is [window_start, window_end)
    window_end: float
    interval_seconds: float
    verdict: Verdict

    @property
    def canary(self) -> Numbers:
        return self.verdict.canary

    @property
    def stable(self) -> Numbers:
        return self.verdict.stable


@dataclass(frozen=True)
class Judgement:
    """One step's deciding verdict over its window."""

    step: int
    weight: float
    window_start: float
    window_end: float
    verdict: Verdict


@dataclass(frozen=True)
class Outcome:
    """How a release ended: promoted or not, why, every deciding verdict, and the release
    as stored at the end (None if it never was). ``changed_by`` names the other writer
    when the controller stopped because someone else changed the release."""

    module: str
    release_id: str
    promoted: bool
    reason: str
    judgements: tuple[Judgement, ...] = ()
    release: Release | None = None
    changed_by: str | None = None


@dataclass
class _Step:
    """The result of watching one step: its deciding verdict, or the release someone else
    wrote in the meantime."""

    verdict: Verdict | None
    window_start: float
    window_end: float
    stable: VersionStats | None = None
    changed: Release | None = None


class ReleaseController:
    """Runs one module's release at a time against a release store and a stats store."""

    def __init__(
        self,
        store: ReleaseStore,
        stats: StatsStore,
        policy: Policy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_progress: Callable[[Progress], None] | None = None,
        actor: str = DEFAULT_ACTOR,
        stats_lag_seconds: float = DEFAULT_STATS_LAG_SECONDS,
    ) -> None:
        self.store = store
        self.stats = stats
        self.policy = policy or Policy()
        self.clock = clock
        self.sleep = sleep
        self.on_progress = on_progress
        self.actor = actor
        self.stats_lag_seconds = stats_lag_seconds

    # -- the release ------------------------------------------------------------------

    def run(self, release: Release) -> Outcome:
        """Run ``release`` to promotion or rollback (or resume it if it is running)."""
        begun = self._begin(release)
        if isinstance(begun, Outcome):
            return begun
        current, step_start = begun
        judgements: list[Judgement] = []
        baseline = self._earlier_baseline(current)
        while True:
            watched = self._watch(current, step_start, baseline)
            if watched.changed is not None or watched.verdict is None:
                return self._changed(current, judgements, watched.changed)
            verdict = watched.verdict
            judgements.append(
                Judgement(
                    current.step, current.weight, watched.window_start, watched.window_end, verdict
                )
            )
            if watched.stable is not None and watched.stable.calls >= self.policy.min_calls:
                baseline = watched.stable
            now = self.clock()
            evidence = (*current.evidence, self._evidence(current, watched, verdict, now))
            nxt = replace(
                self._after(current, verdict),
                evidence=evidence,
                updated_at=now,
                updated_by=self.actor,
            )
            stored = self.store.put(nxt, expected_revision=current.revision)
            if stored is None:
                return self._changed(current, judgements, None)
            if stored.phase == "rolled-back":
                return self._outcome(stored, False, "; ".join(verdict.reasons), judgements)
            if stored.phase == "promoted":
                return self._outcome(
                    stored, True, f"promoted after {len(stored.steps)} steps", judgements
                )
            current, step_start = stored, now

    @staticmethod
    def _after(current: Release, verdict: Verdict) -> Release:
        """The release a step's deciding verdict leads to: rolled back to 0% on a fail,
        the next step's weight on a pass, and the canary made stable when the next step is
        the last (100%: every driver on it, with no stable traffic left to judge it
        against at the same time, so that step is the promotion itself)."""
        if verdict.kind != "pass":
            return replace(current, weight=0.0, phase="rolled-back")
        if current.step + 2 >= len(current.steps):
            return replace(
                current,
                phase="promoted",
                weight=0.0,
                stable_version=current.canary_version,
                stable_url=current.canary_url,
            )
        step = current.step + 1
        return replace(current, step=step, weight=current.steps[step])

    def rollback(self, module: str, reason: str, by: str) -> Release | None:
        """An operator's abort: the module's running release to 0% now, with ``reason`` in
        its evidence. The stored release, or None when no release of ``module`` is
        running."""
        for _ in range(ROLLBACK_ATTEMPTS):
            current = self.store.get(module)
            if current is None or current.phase != "running":
                return None
            now = self.clock()
            entry = {
                "verdict": "rollback",
                "reasons": [reason],
                "by": by,
                "at": now,
                "step": current.step,
                "weight": current.weight,
            }
            stored = self.store.put(
                replace(
                    current,
                    weight=0.0,
                    phase="rolled-back",
                    evidence=(*current.evidence, entry),
                    updated_at=now,
                    updated_by=by,
                ),
                expected_revision=current.revision,
            )
            if stored is not None:
                return stored
        raise ReleaseError(
            f"could not roll back {module}: the release changed {ROLLBACK_ATTEMPTS} times"
        )

    # -- steps ------------------------------------------------------------------------

    def _begin(self, release: Release) -> tuple[Release, float] | Outcome:
        """Write the release at its first step, or find it running and resume it; the
        release as stored and when its current step started."""
        existing = self.store.get(release.module)
        now = self.clock()
        if existing is not None and existing.release_id == release.release_id:
            if existing.phase == "running":
                # judged on from the step's start, or (resumed long after) over the last
                # interval only: a window that ended before the resume can only be quiet
                started = min(existing.updated_at or now, now)
                return existing, max(started, now - self.policy.interval_seconds)
            return self._outcome(
                existing, existing.phase == "promoted", f"release already {existing.phase}", []
            )
        if existing is not None and existing.phase == "running":
            return self._outcome(
                existing,
                False,
                f"{release.module} already has release {existing.release_id} running "
                f"(by {existing.updated_by or 'someone else'})",
                [],
                changed_by=existing.updated_by,
            )
        steps = self.policy.steps
        first = replace(
            release,
            steps=steps,
            step=0,
            weight=steps[0],
            phase="running",
            started_at=now,
            updated_at=now,
            updated_by=self.actor,
            evidence=(),
        )
        stored = self.store.put(
            first, expected_revision=None if existing is None else existing.revision
        )
        if stored is None:
            return self._changed(release, [], None)
        return stored, now

    def _watch(self, release: Release, step_start: float, baseline: VersionStats | None) -> _Step:
        """Tick through one step until a verdict decides it (a fail at any tick, a pass
        at an interval's end, or too many intervals without enough calls)."""
        policy = self.policy
        window_start = float(math.ceil(step_start))  # the first whole second at this weight
        deadline = window_start + math.ceil(policy.interval_seconds)
        quiet = 0
        while True:
            now = self.clock()
            final = now >= deadline + self.stats_lag_seconds
            end = max(window_start, min(float(math.floor(now)), deadline))
            canary = self.stats.window(
                release.release_id, release.canary_version, window_start, end
            )
            stable = self.stats.window(
                release.release_id, release.stable_version, window_start, end
            )
            verdict = judge(canary, stable, policy, earlier_stable=baseline, final=final)
            if self.on_progress is not None:
                self.on_progress(
                    Progress(
                        release.module,
                        release.release_id,
                        release.step,
                        release.steps,
                        release.weight,
                        release.stable_version,
                        release.canary_version,
                        window_start,
                        end,
                        policy.interval_seconds,
                        verdict,
                    )
                )
            seen = self.store.get(release.module)
            if seen is None or seen.revision != release.revision:
                return _Step(None, window_start, end, changed=seen)
            if verdict.kind == "fail" or (final and verdict.kind == "pass"):
                return _Step(verdict, window_start, end, stable)
            if final:
                quiet += 1
                if quiet >= policy.max_quiet_intervals:
                    reason = (
                        f"not enough traffic to judge after {quiet} intervals of "
                        f"{policy.interval_seconds:g} s"
                    )
                    quiet_fail = replace(verdict, kind="fail", reasons=(reason, *verdict.reasons))
                    return _Step(quiet_fail, window_start, end, stable)
                deadline += math.ceil(policy.interval_seconds)
            wake = deadline + self.stats_lag_seconds - now
            self.sleep(max(0.0, min(policy.tick_seconds, wake)))

    def _earlier_baseline(self, release: Release) -> VersionStats | None:
        """On resume: the stable window of the latest stored verdict that had enough
        stable calls, read back from the stats store (the baseline when stable is quiet)."""
        for entry in reversed(release.evidence):
            window = entry.get("window")
            stable = entry.get("stable") or {}
            if window and stable.get("calls", 0) >= self.policy.min_calls:
                return self.stats.window(
                    release.release_id, release.stable_version, window[0], window[1]
                )
        return None

    # -- outcomes ---------------------------------------------------------------------

    @staticmethod
    def _evidence(release: Release, watched: _Step, verdict: Verdict, now: float) -> dict[str, Any]:
        return {
            "step": release.step,
            "weight": release.weight,
            "window": [watched.window_start, watched.window_end],
            "at": now,
            **verdict.as_evidence(),
        }

    def _changed(self, ours: Release, judgements: list[Judgement], seen: Release | None) -> Outcome:
        other = seen or self.store.get(ours.module)
        by = other.updated_by if other is not None and other.updated_by else "someone else"
        promoted = (
            other is not None and other.release_id == ours.release_id and other.phase == "promoted"
        )
        reason = f"changed by {by}"
        if other is not None:
            reason += f" ({other.phase}, weight {other.weight:g}%)"
        return Outcome(ours.module, ours.release_id, promoted, reason, tuple(judgements), other, by)

    @staticmethod
    def _outcome(
        release: Release,
        promoted: bool,
        reason: str,
        judgements: list[Judgement],
        *,
        changed_by: str | None = None,
    ) -> Outcome:
        return Outcome(
            release.module,
            release.release_id,
            promoted,
            reason,
            tuple(judgements),
            release,
            changed_by,
        )
