"""Judge a canary against the stable version measured over the same interval.

Pure: numbers in, a :class:`Verdict` out. The controller decides when to ask (every tick)
and which stable window is the baseline; this module only says pass, fail or wait, why,
and with which numbers, so the verdict can be stored as evidence and shown as it is.

Rules (thresholds from :class:`~relay.release.policy.Policy`):

* no verdict before both versions have ``min_calls`` in the window ("wait"), except that a
  canary with ``min_calls`` below the absolute success floor fails even with no baseline;
* fail when the canary's success rate is more than ``max_success_drop`` below the
  baseline's, or below ``min_success_rate``;
* fail when the canary's p99 is above the baseline's times ``max_p99_ratio`` *and* more than
  ``min_p99_delta_ms`` above it (a 2 ms → 4 ms p99 is not a regression worth a rollback);
* a fail may be decided early, within the interval; a pass only at its end (``final``).

When the stable version has too few calls in the window (a quiet hour; or a release stored
at its 100% step, which the controller no longer judges: it promotes after the last step
below 100), the baseline is the last earlier stable window that had enough
(``earlier_stable``), and the verdict says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from .policy import Policy

if TYPE_CHECKING:
    from gateway.release.stats import VersionStats

Kind = Literal["pass", "fail", "wait"]
BaselineSource = Literal["same interval", "earlier interval", "none"]
P99 = 0.99


@dataclass(frozen=True)
class Numbers:
    """One version's numbers over a window, as shown and stored (JSON-able)."""

    calls: int
    failures: int
    success_rate: float | None  # 0..1; None with no calls
    p99_ms: float | None

    @classmethod
    def of(cls, stats: VersionStats) -> Numbers:
        return cls(stats.calls, stats.failures, stats.success_rate, stats.percentile(P99))

    def success_text(self) -> str:
        return "-" if self.success_rate is None else f"{self.success_rate * 100:.1f}%"

    def p99_text(self) -> str:
        return "-" if self.p99_ms is None else f"{self.p99_ms:.0f} ms"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one judgement: ``kind``, human ``reasons`` with their numbers, the
    canary's and the stable version's numbers over the window, and the baseline used (the
    stable numbers themselves, or an earlier stable window's)."""

    kind: Kind
    reasons: tuple[str, ...]
    canary: Numbers
    stable: Numbers
    baseline: Numbers | None
    baseline_source: BaselineSource

    @property
    def summary(self) -> str:
        return f"{self.kind}: {'; '.join(self.reasons)}" if self.reasons else self.kind

    def as_evidence(self) -> dict[str, Any]:
        """The verdict as a JSON-able dict, for the release's evidence."""
        return {
            "verdict": self.kind,
            "reasons": list(self.reasons),
            "canary": asdict(self.canary),
            "stable": asdict(self.stable),
            "baseline": None if self.baseline is None else asdict(self.baseline),
            "baseline_source": self.baseline_source,
        }


def judge(
    canary: VersionStats,
    stable: VersionStats,
    policy: Policy,
    *,
    earlier_stable: VersionStats | None = None,
    final: bool = True,
) -> Verdict:
    """Judge ``canary`` against ``stable`` (both over the same window).

    ``earlier_stable`` is the baseline when ``stable`` has fewer than ``min_calls``;
    ``final`` is False before the interval's end, when only a fail can be decided.
    """
    canary_n, stable_n = Numbers.of(canary), Numbers.of(stable)
    baseline: Numbers | None = None
    source: BaselineSource = "none"
    if stable_n.calls >= policy.min_calls:
        baseline, source = stable_n, "same interval"
    elif earlier_stable is not None and earlier_stable.calls >= policy.min_calls:
        baseline, source = Numbers.of(earlier_stable), "earlier interval"

    def verdict(kind: Kind, reasons: list[str]) -> Verdict:
        return Verdict(kind, tuple(reasons), canary_n, stable_n, baseline, source)

    if canary_n.calls < policy.min_calls:
        return verdict("wait", [_too_few(canary_n, stable_n, policy)])
    failures = _below_floor(canary_n, policy)
    if baseline is None:
        if failures:
            return verdict("fail", [*failures, "no stable baseline with enough calls"])
        return verdict("wait", [_too_few(canary_n, stable_n, policy)])
    latency_judged = min(canary_n.calls, baseline.calls) >= policy.min_latency_calls
    failures = _success_drop(canary_n, baseline, policy) + failures
    if latency_judged:
        failures += _slower(canary_n, baseline, policy)
    if source == "earlier interval":
        note = f"baseline: stable's earlier window ({baseline.calls} calls)"
    else:
        note = ""
    if failures:
        return verdict("fail", failures + ([note] if note else []))
    comparison = [
        f"success {canary_n.success_text()} vs stable {baseline.success_text()}",
        f"p99 {canary_n.p99_text()} vs stable {baseline.p99_text()}",
    ]
    if note:
        comparison.append(note)
    if not final:
        return verdict("wait", ["no regression so far", *comparison])
    if not latency_judged:
        return verdict(
            "wait",
            [
                f"too few calls to judge p99: canary {canary_n.calls}, baseline "
                f"{baseline.calls} (need {policy.min_latency_calls} each)",
                *comparison,
            ],
        )
    return verdict("pass", comparison)


def _too_few(canary: Numbers, stable: Numbers, policy: Policy) -> str:
    return (
        f"too few calls to judge: canary {canary.calls}, stable {stable.calls} "
        f"(need {policy.min_calls} each)"
    )


def _below_floor(canary: Numbers, policy: Policy) -> list[str]:
    rate = canary.success_rate
    if rate is None or rate >= policy.min_success_rate:
        return []
    return [f"success {canary.success_text()} below the floor {policy.min_success_rate:.1%}"]


def _success_drop(canary: Numbers, baseline: Numbers, policy: Policy) -> list[str]:
    if canary.success_rate is None or baseline.success_rate is None:
        return []
    drop = baseline.success_rate - canary.success_rate
    if drop <= policy.max_success_drop:
        return []
    return [
        f"success {canary.success_text()} vs stable {baseline.success_text()} "
        f"(drop {drop * 100:.1f} points > {policy.max_success_drop * 100:.1f})"
    ]


def _slower(canary: Numbers, baseline: Numbers, policy: Policy) -> list[str]:
    if canary.p99_ms is None or baseline.p99_ms is None:
        return []
    over_ratio = canary.p99_ms > baseline.p99_ms * policy.max_p99_ratio
    over_delta = canary.p99_ms - baseline.p99_ms > policy.min_p99_delta_ms
    if not (over_ratio and over_delta):
        return []
    ratio = canary.p99_ms / baseline.p99_ms if baseline.p99_ms > 0 else float("inf")
    return [
        f"p99 {canary.p99_ms:.0f} ms vs stable {baseline.p99_ms:.0f} ms "
        f"({ratio:.1f}x > {policy.max_p99_ratio:.1f}x)"
    ]
