"""The benchmark's verdict logic: pure functions over numbers measured in one run.

Every target compares a figure with a reference measured in the same run, in interleaved
rounds (reference, measured, reference, measured, ...). A figure is reported as the median
of its rounds with their spread (min-max). Before a verdict is given, the reference's own
spread across rounds is checked: when it exceeds the reference's noise threshold the host
was too noisy for the comparison to mean anything, and the verdict says so instead of
claiming MET or MISSED.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MET = "met"
MISSED = "MISSED"
TOO_NOISY = "too noisy for a verdict"
VERDICTS = (MET, MISSED, TOO_NOISY)

# Before/after (``--baseline``) verdicts.
WITHIN = "within 5%"
SLOWER = "slower"
FASTER = "faster"
NOISY = "too noisy"
BASELINE_TOLERANCE = 0.05

# The largest relative spread ((max - min) / median across rounds) a reference may show
# for a verdict that depends on it. Throughput of a saturated server is steady on a quiet
# host (a few percent round to round); a tail latency (p99) and an interpreter's import
# time move more, so they get more room.
NOISE_THRESHOLDS = {
    "rps": 0.15,
    "p99": 0.35,
    "import": 0.20,
    # --baseline: the before tree's own spread must stay under twice the 5% tolerance,
    # or a 5% difference cannot be told from the noise.
    "baseline": 0.10,
}


@dataclass(frozen=True)
class Spread:
    """Median and range of one figure over the rounds of a run."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def relative(self) -> float:
        """(max - min) / median: 0 when every round agrees. Infinite around a zero median."""
        if self.median == 0:
            return 0.0 if self.high == self.low else float("inf")
        return (self.high - self.low) / abs(self.median)

    def show(self, fmt: str = "{:.2f}", unit: str = "") -> str:
        """``1.23 ms (1.10-1.40, 3 rounds)``."""
        low, high = fmt.format(self.low), fmt.format(self.high)
        return f"{fmt.format(self.median)}{unit} ({low}-{high}, {self.rounds} rounds)"

    def as_dict(self) -> dict[str, float]:
        return {
            "median": self.median,
            "low": self.low,
            "high": self.high,
            "rounds": self.rounds,
            "relative_spread": self.relative,
        }


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no rounds to summarise")
    return Spread(statistics.median(values), min(values), max(values), len(values))


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round by round: the i-th measurement over the i-th reference (measured next to it)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} measurements for {len(denominators)} references")
    return [n / d if d else float("inf") for n, d in zip(numerators, denominators, strict=True)]


def too_noisy(reference: Spread, threshold: float) -> bool:
    """The reference moved more than ``threshold`` (relative spread) across its rounds."""
    return reference.relative > threshold


def verdict(
    value: float,
    target: float,
    *,
    at_most: bool,
    reference: Spread,
    threshold: float,
    also: bool = True,
) -> str:
    """MET, MISSED or TOO_NOISY for ``value`` against ``target`` (``value <= target`` when
    ``at_most``, else ``value >= target``); ``also`` is any further condition (e.g. 100%
    success), which fails the target whatever the noise."""
    if too_noisy(reference, threshold):
        return TOO_NOISY
    ok = value <= target if at_most else value >= target
    return MET if ok and also else MISSED


def once_verdict(value: float, target: float, *, at_most: bool, also: bool = True) -> str:
    """MET or MISSED for a figure measured once against a goal set in advance (e.g. a bad
    canary's time to 0% against the analysis interval): nothing was measured beside it in
    rounds, so there is no reference spread and no TOO_NOISY; ``also`` as in :func:`verdict`."""
    ok = value <= target if at_most else value >= target
    return MET if ok and also else MISSED


def baseline_verdict(
    after_over_before: Spread,
    before: Spread,
    *,
    higher_is_better: bool = True,
    tolerance: float = BASELINE_TOLERANCE,
    threshold: float = NOISE_THRESHOLDS["baseline"],
) -> str:
    """The current tree against a baseline tree: the median after/before ratio is within
    ``tolerance`` (or better), worse (SLOWER) or better by more (FASTER); NOISY when the
    before tree's own rounds spread more than ``threshold``."""
    if too_noisy(before, threshold):
        return NOISY
    gain = after_over_before.median if higher_is_better else 1 / after_over_before.median
    if gain < 1 - tolerance:
        return SLOWER
    if gain > 1 + tolerance:
        return FASTER
    return WITHIN
