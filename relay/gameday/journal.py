"""Reading a Chaos Toolkit journal: did the game day pass?

chaostoolkit-lib's ``run_experiment`` returns the journal and raises nothing when the
steady-state hypothesis deviated or an action failed (``chaos run`` exits 1 on a
deviation, unless ``--no-exit``; an action of the method that failed need not change the
journal's status at all). A game day passes only when its journal says so: ``status``
completed, not ``deviated``, every method activity and rollback succeeded, and the
load's summary (the ``finish-load`` activity's output) holds every invariant that applies
and is not expected to break.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SUMMARY_ACTIVITY = "finish-load"


@dataclass
class Verdict:
    scenario: str
    title: str
    status: str
    deviated: bool
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    duration: float = 0.0
    expected: list[str] = field(default_factory=list)  # invariants broken as expected

    @property
    def ok(self) -> bool:
        return not self.problems


def read(journal: Mapping[str, Any], scenario: str | None = None) -> Verdict:
    experiment = journal.get("experiment", {})
    relay: Mapping[str, Any] = next(
        (e for e in experiment.get("extensions", []) if e.get("name") == "relay"), {}
    )
    verdict = Verdict(
        scenario=scenario or str(relay.get("scenario", experiment.get("title", "?"))),
        title=str(experiment.get("title", "")),
        status=str(journal.get("status")),
        deviated=bool(journal.get("deviated")),
        duration=float(journal.get("duration") or 0.0),
    )
    if verdict.status != "completed":
        verdict.problems.append(f"the experiment {verdict.status}")
    if verdict.deviated:
        verdict.problems.append("the steady-state hypothesis deviated")
    for probe in _after_probes(journal):
        if not probe.get("tolerance_met", True):
            name = probe.get("activity", {}).get("name", "?")
            verdict.problems.append(f"probe {name} did not hold after the fault")
    for part in ("run", "rollbacks"):
        for entry in journal.get(part) or []:
            if entry.get("status") != "succeeded":
                name = entry.get("activity", {}).get("name", "?")
                what = "rollback" if part == "rollbacks" else "action"
                exc = "".join(entry.get("exception") or [])[-300:].strip()
                verdict.problems.append(f"{what} {name} {entry.get('status')}: {exc}".rstrip(": "))
            elif entry.get("activity", {}).get("name") == SUMMARY_ACTIVITY:
                output = entry.get("output")
                verdict.summary = output if isinstance(output, dict) else None
    if verdict.summary is None:
        verdict.problems.append("no load summary in the journal (finish-load did not run)")
    else:
        for inv in verdict.summary.get("invariants", []):
            if not inv.get("applicable", True) or inv.get("passed"):
                continue
            if inv.get("expected"):
                verdict.expected.append(f"{inv['name']} broken as expected: {inv['detail']}")
            else:
                verdict.problems.append(f"invariant {inv['name']} broken: {inv['detail']}")
    return verdict


def _after_probes(journal: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    after = (journal.get("steady_states") or {}).get("after") or {}
    return list(after.get("probes") or [])
