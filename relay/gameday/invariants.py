"""The invariants checked after each scenario, once its fault is undone and the stack settled.

- **critical answered**: every call of a critical function (loads read, event write, gate
  pass issue/read, gate pass verify) was answered, live or degraded: 100%.
- **nothing lost**: every write answered 2xx or 202 was applied after recovery.
- **nothing twice**: a key sent twice was applied once (and answered alike).
- **isolation**: a fault in one module leaves the other modules' functions live: none of
  their calls failed, and at most one, or :data:`ISOLATION_SLACK` of them if more, were
  answered degraded (a call slower than its deadline on a busy host is answered by its
  fallback; more than a few is the fault spreading). A write queued with 202 is degraded.
- **recovered**: every function answers live again within the settle time.

Pure functions over what the load recorded: unit-tested without a stack.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .outcome import CRITICAL, MODULE_OF, Function, Outcome, Tally

# The share of an untouched module's calls that may be answered degraded, one call at
# least (none may fail).
ISOLATION_SLACK = 0.05
EVERY_MODULE = "*"  # a scenario whose fault reaches every module (the emulator): no isolation


@dataclass(frozen=True)
class Invariant:
    name: str
    passed: bool
    detail: str
    applicable: bool = True
    # why the scenario expects it to break (a limit of the design, said in the report);
    # an expected break does not fail the game day
    expected: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def holds(self) -> bool:
        """Passed, not applicable, or broken as the scenario expects."""
        return self.passed or not self.applicable or bool(self.expected)


def critical_answered(tallies: Mapping[Function, Tally]) -> Invariant:
    calls = sum(tallies[f].total for f in CRITICAL)
    answered = sum(tallies[f].answered for f in CRITICAL)
    short = [
        f"{f.value} {tallies[f].counts[Outcome.FAILED]} failed"
        for f in CRITICAL
        if tallies[f].counts[Outcome.FAILED]
    ]
    if calls == 0:
        return Invariant("critical answered", False, "no critical call was made")
    share = answered / calls
    detail = f"{answered}/{calls} answered ({share:.1%})" + (
        f": {', '.join(short)}" if short else ""
    )
    return Invariant("critical answered", answered == calls, detail)


def nothing_lost(check: Mapping[str, Any]) -> Invariant:
    lost = list(check.get("lost", []))
    answered, applied = int(check.get("answered", 0)), int(check.get("applied", 0))
    detail = f"{applied} of {answered} answered writes applied"
    if lost:
        detail += f"; lost: {'; '.join(lost[:3])}" + (" ..." if len(lost) > 3 else "")
    return Invariant("nothing lost", not lost and answered > 0, detail if answered else "no write")


def nothing_twice(check: Mapping[str, Any]) -> Invariant:
    twice = list(check.get("twice", []))
    duplicates = int(check.get("duplicates", 0))
    detail = (
        f"{duplicates} duplicate deliveries, {len(twice)} applied twice or answered differently"
    )
    if twice:
        detail += f": {'; '.join(twice[:3])}"
    return Invariant("nothing twice", not twice, detail)


def isolation(tallies: Mapping[Function, Tally], faulted: Collection[str]) -> Invariant:
    """The functions of the modules the scenario does not touch never failed and were
    answered live: at most one, or :data:`ISOLATION_SLACK`, of each function's calls
    degraded. A write of theirs queued (202) counts as degraded: the gateway keeps a
    driver's writes in order per module (docs/resilience.md, deferred writes), so a
    message waiting for message to come back never holds up a trip event."""
    if EVERY_MODULE in faulted:
        return Invariant("isolation", True, "the fault reaches every module", applicable=False)
    others = [f for f in Function if MODULE_OF[f] not in faulted and tallies[f].total]
    broken, slack = [], []
    for f in others:
        t = tallies[f]
        not_live = t.total - t.counts[Outcome.LIVE]
        if t.counts[Outcome.FAILED] or not_live > max(1, ISOLATION_SLACK * t.total):
            broken.append(f"{f.value} {not_live}/{t.total}")
        elif not_live:
            slack.append(f"{f.value} {not_live}/{t.total}")
    live = sum(tallies[f].counts[Outcome.LIVE] for f in others)
    calls = sum(tallies[f].total for f in others)
    if broken:
        return Invariant("isolation", False, f"not live: {', '.join(broken)}")
    detail = f"{live}/{calls} calls of the other modules live"
    if slack:
        detail += f"; degraded within the slack: {', '.join(slack)}"
    return Invariant("isolation", True, detail)


def recovered(seconds: float | None, settle_seconds: float) -> Invariant:
    if seconds is None:
        return Invariant("recovered", False, f"not every function live after {settle_seconds:g} s")
    return Invariant("recovered", True, f"every function live {seconds:g} s after the undo")


def check_all(
    tallies: Mapping[Function, Tally],
    writes: Mapping[str, Any],
    faulted: Collection[str],
    recovery_seconds: float | None,
    settle_seconds: float,
    expected: Mapping[str, str] | None = None,
) -> list[Invariant]:
    """Every invariant; ``expected`` names those the scenario expects to break, and why."""
    checked = [
        critical_answered(tallies),
        nothing_lost(writes),
        nothing_twice(writes),
        isolation(tallies, faulted),
        recovered(recovery_seconds, settle_seconds),
    ]
    expected = expected or {}
    unknown = set(expected) - {i.name for i in checked}
    if unknown:
        raise ValueError(f"no invariant named {', '.join(sorted(unknown))}")
    return [
        replace(i, expected=expected[i.name]) if i.name in expected and not i.passed else i
        for i in checked
    ]
