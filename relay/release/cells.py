"""Releasing a celled module (docs/cells.md): one cell after another, each a full canary
release of that cell's unit (``loads/cell-1``), then a bake with a health gate before the
next cell starts.

**Order.** cell-1, cell-2, ... (by number, so cell-10 follows cell-9). The first cell is
the canary of the others: a version that is bad in production reaches at most one cell's
share of drivers, and within it at most the canary's share until the analysis stops it.

**Per cell.** ``release_cell(unit)`` runs the ordinary release (:func:`relay.release.deploy.
deploy`: start, contract, steps and analysis against that cell's stable version, promote
or roll back). The release item is the unit's (``module = "loads/cell-1"``), so the
gateways move only that cell's drivers.

**Bake and health gate** (:class:`HealthGate`), after each promoted cell, the last one too:
for ``cell_bake_seconds`` the gate reads, at every tick,

- the cell's **fleet breaker** (``kind = "breaker"``, ``name = "loads/cell-1"`` in the
  control table): open at any tick fails the gate at once. It is the one per-cell health
  signal every gateway instance writes after a promotion: the gateways count release
  stats (``kind = "release-stats"``) only while a canary takes traffic, so after the
  promotion there are none to judge (the analysis already judged success rate and p99
  against the old version at every step up to 50%);
- the cell's **release item**: still this release, promoted. Another writer (a new
  release of the cell, an operator) stops the gate: it is no longer this release's to
  judge;

and at the end asks the host whether the cell **serves the promoted version** (locally
the process's ``x-relay-version``; in AWS the cell stack's ``live-version`` and its canary
alarms, none in ALARM).

**On failure, stop.** A cell whose canary the analysis rolled back (or whose contract
check failed, or whose deploy failed) keeps its old version, as any release. A cell that
fails its health gate after the promotion is **reverted**: its previous version is made
live again (in AWS the ``live`` alias moved back by a stack update; locally the previous
version's process started again from its source and promoted) and its release item says
``rolled-back`` with the gate's reasons. Either way no later cell is released. The cells
before it keep the new version: each passed its own canary analysis, bake and health
gate, shares nothing with the failing cell, and putting it back would be a deployment of
its own (more risk, drivers moved twice) to undo a version it has evidence for; the
operator decides about them (``relay deploy loads/cell-1 --ref <previous>``).

A cell that already runs the version (a rerun after a stop) counts as done and is not
baked again, so running the same release again continues where it stopped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .controller import Outcome
from .exceptions import ReleaseError

if TYPE_CHECKING:
    from gateway.release.state import Release, ReleaseStore
    from gateway.resilience.fleet import FleetRecord

    from .deploy import DeployResult, VersionHost

CELL_NAME = re.compile(r"^cell-([1-9][0-9]*)$")
REVERT_ATTEMPTS = 3

CellStatus = Literal["promoted", "already", "rolled-back", "reverted", "not-reverted", "not-run"]


# --- which cells ------------------------------------------------------------------------


def cell_order(cells: Iterable[str]) -> list[str]:
    """``cell-1``, ``cell-2``, ... by number; anything that is not a cell name is refused."""
    numbered: list[tuple[int, str]] = []
    for cell in set(cells):
        match = CELL_NAME.match(cell)
        if match is None:
            raise ReleaseError(f"{cell!r} is not a cell name (cell-1, cell-2, ...)")
        numbered.append((int(match.group(1)), cell))
    return [cell for _, cell in sorted(numbered)]


def unit(module: str, cell: str) -> str:
    """A cell's unit, as the gateway names its upstream and keys its release."""
    return f"{module}/{cell}"


def cells_from_state(state: Mapping[str, Any], module: str) -> list[str]:
    """A local stack's cells of ``module`` (``stack.json``: ``cells: {"loads": [...]}``);
    none when the module is not celled."""
    return cell_order((state.get("cells") or {}).get(module) or [])


def cells_from_status(status: Mapping[str, Any], module: str) -> list[str]:
    """A gateway's cells of ``module`` from its ``/ops/status``
    (``cells: {"loads": {"cells": [...]}}``)."""
    found = ((status.get("cells") or {}).get(module) or {}).get("cells") or []
    return cell_order(found)


def cells_from_ssm(ssm: Any, stage: str, module: str) -> list[str]:
    """A stage's cells of ``module`` in AWS: a cell stack publishes under
    ``/relay/<stage>/<module>/<cell>/``, the uncelled stack directly under
    ``/relay/<stage>/<module>/``. None found: the module is not celled."""
    prefix = f"/relay/{stage}/{module}/"
    cells: set[str] = set()
    kwargs: dict[str, Any] = {"Path": prefix, "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        for parameter in page.get("Parameters", []):
            head, sep, _ = str(parameter["Name"]).removeprefix(prefix).partition("/")
            if sep and CELL_NAME.match(head):
                cells.add(head)
        token = page.get("NextToken")
        if not token:
            return cell_order(cells)
        kwargs["NextToken"] = token


# --- the health gate --------------------------------------------------------------------


class BreakerSource(Protocol):
    """The fleet's breaker items (``gateway.resilience.fleet.ControlTableBreakers``)."""

    def load(self) -> dict[str, FleetRecord]: ...


@dataclass(frozen=True)
class GateResult:
    """A promoted cell's bake: passed or not, why, and how often it was looked at."""

    unit: str
    passed: bool
    reasons: tuple[str, ...]
    samples: int
    seconds: float
    changed_by: str | None = None  # another writer changed the cell's release meanwhile

    @property
    def summary(self) -> str:
        return ("passed: " if self.passed else "FAILED: ") + "; ".join(self.reasons)


Probe = Callable[[str, "Release"], list[str]]  # (unit, promoted release) -> problems


class HealthGate:
    """Bakes a promoted cell for ``seconds`` and judges it (module docstring). ``probe``
    asks the host whether the cell serves the promoted version (problems, or none)."""

    def __init__(
        self,
        store: ReleaseStore,
        breakers: BreakerSource | None,
        probe: Probe | None = None,
        *,
        tick_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        on_tick: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.breakers = breakers
        self.probe = probe
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.sleep = sleep
        self.on_tick = on_tick

    def bake(self, release: Release, seconds: float) -> GateResult:
        unit_name = release.module
        start = self.clock()
        end = start + seconds
        samples = 0
        read_errors: list[str] = []
        while True:
            now = self.clock()
            final = now >= end
            samples += 1
            current = self.store.get(unit_name)
            if (
                current is None
                or current.release_id != release.release_id
                or current.phase != "promoted"
            ):
                by = current.updated_by if current is not None else None
                what = (
                    "gone"
                    if current is None
                    else f"{current.release_id} {current.phase} (by {by or 'someone else'})"
                )
                reason = f"the release of {unit_name} changed during the bake: {what}"
                return GateResult(unit_name, False, (reason,), samples, now - start, by or "?")
            try:
                record = self._breaker(unit_name)
            except Exception as exc:  # the store, not the cell: judged again next tick
                record = None
                read_errors.append(f"{type(exc).__name__}: {exc}")
                if final:
                    reason = f"could not read {unit_name}'s fleet breaker at the end: {exc}"
                    return GateResult(unit_name, False, (reason,), samples, now - start)
            else:
                read_errors.clear()
            if record is not None and record.is_open:
                opened = now - (record.opened_at or now)
                reason = (
                    f"breaker {unit_name} open {now - start:.0f} s into the bake "
                    f"(opened {opened:.0f} s before"
                    + (f" by {record.opened_by}" if record.opened_by else "")
                    + (f": {record.reason}" if record.reason else "")
                    + ")"
                )
                return GateResult(unit_name, False, (reason,), samples, now - start)
            if self.on_tick is not None:
                failures = record.failures if record is not None else 0
                self.on_tick(
                    f"{unit_name} baking [{min(now, end) - start:.0f}/{seconds:g} s]: "
                    "breaker closed" + (f" ({failures} failures in a row)" if failures else "")
                )
            if final:
                break
            self.sleep(max(0.0, min(self.tick_seconds, end - now)))
        problems = self.probe(unit_name, current) if self.probe is not None else []
        elapsed = self.clock() - start
        if problems:
            return GateResult(unit_name, False, tuple(problems), samples, elapsed)
        reasons = [
            f"breaker {unit_name} closed at all {samples} looks over {seconds:g} s",
            f"release {release.release_id} promoted throughout",
        ]
        if self.probe is not None:
            reasons.append(f"serves {current.stable_version}")
        return GateResult(unit_name, True, tuple(reasons), samples, elapsed)

    def _breaker(self, unit_name: str) -> FleetRecord | None:
        if self.breakers is None:
            return None
        return self.breakers.load().get(unit_name)


# --- reverting a promoted cell ----------------------------------------------------------


SourceFor = Callable[[str], Path | None]  # a version label -> its source tree, if known


def revert_cell(
    promoted: Release,
    previous_version: str,
    previous_url: str | None,
    *,
    host: VersionHost,
    store: ReleaseStore,
    reasons: Iterable[str],
    actor: str,
    source_for: SourceFor | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Make ``previous_version`` the cell's version again after a failed health gate, and
    record it in the cell's release (``rolled-back``, the stable version and URL the
    previous one's, the gate's reasons as evidence). The URL the cell is served from.

    A host that labels its own versions (AWS) moves live back (``promote``) and the live
    URL serves it. Locally the previous version's process has stopped since the promotion:
    it is started again from ``source_for(previous_version)``, the gateways are pointed at
    it, and it is promoted; without a source it cannot be, a :class:`ReleaseError`."""
    from .deploy import DRAIN_SECONDS, LabelledVersionHost

    cell_unit = promoted.module
    if isinstance(host, LabelledVersionHost):
        host.promote(cell_unit, previous_version)
        url = previous_url or host.url(cell_unit)
        _record_revert(promoted, previous_version, url, store, reasons, actor, clock)
        return url
    source = source_for(previous_version) if source_for is not None else None
    if source is None:
        raise ReleaseError(
            f"cannot put {cell_unit} back on {previous_version}: its source is not known "
            f"(relay deploy {cell_unit} --ref <its git ref or directory>)"
        )
    url = host.start(cell_unit, source, previous_version)
    # the gateways move to it first, then the promoted process is retired behind them
    _record_revert(promoted, previous_version, url, store, reasons, actor, clock)
    sleep(DRAIN_SECONDS)
    host.promote(cell_unit, previous_version)
    return url


def _record_revert(
    promoted: Release,
    version: str,
    url: str,
    store: ReleaseStore,
    reasons: Iterable[str],
    actor: str,
    clock: Callable[[], float],
) -> None:
    reasons = list(reasons)
    for _ in range(REVERT_ATTEMPTS):
        stored = store.get(promoted.module)
        if stored is None or stored.release_id != promoted.release_id:
            return  # a later release replaced it: not ours to write
        now = clock()
        entry = {
            "verdict": "health-gate",
            "reasons": reasons,
            "by": actor,
            "at": now,
            "reverted_to": version,
        }
        reverted = replace(
            stored,
            phase="rolled-back",
            weight=0.0,
            stable_version=version,
            stable_url=url,
            evidence=(*stored.evidence, entry),
            updated_at=now,
            updated_by=actor,
        )
        if store.put(reverted, expected_revision=stored.revision) is not None:
            return
    raise ReleaseError(f"could not record {promoted.module}'s revert to {version}")


# --- cell by cell ---------------------------------------------------------------------


@dataclass(frozen=True)
class CellRelease:
    """What releasing one cell gave: the controller's outcome (None: refused before any
    traffic, e.g. by the contract check), and the version and URL the cell ran before.
    ``already``: the cell runs the version already; nothing was released."""

    outcome: Outcome | None
    previous_version: str | None = None
    previous_url: str | None = None
    already: bool = False
    reason: str = ""


@dataclass(frozen=True)
class CellOutcome:
    cell: str
    unit: str
    status: CellStatus
    reason: str = ""
    outcome: Outcome | None = None
    gate: GateResult | None = None


@dataclass(frozen=True)
class CelledOutcome:
    module: str
    cells: list[CellOutcome] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """Every cell runs the new version, each having passed its gate."""
        return bool(self.cells) and all(c.status in ("promoted", "already") for c in self.cells)

    @property
    def halted_at(self) -> str | None:
        return next(
            (c.cell for c in self.cells if c.status not in ("promoted", "already", "not-run")),
            None,
        )

    @property
    def reason(self) -> str:
        halted = next((c for c in self.cells if c.cell == self.halted_at), None)
        if halted is None:
            return f"every cell promoted ({', '.join(c.cell for c in self.cells)})"
        kept = [c.cell for c in self.cells if c.status in ("promoted", "already")]
        return (
            f"{halted.unit} {halted.status}: {halted.reason}"
            + (f"; {', '.join(kept)} keep the new version" if kept else "")
            + "; later cells not released"
        )

    def as_outcome(self) -> Outcome:
        """One outcome for the module (a plan's stage)."""
        judgements = tuple(j for c in self.cells if c.outcome for j in c.outcome.judgements)
        return Outcome(self.module, "", self.promoted, self.reason, judgements)


@dataclass(frozen=True)
class CellEvent:
    """What :func:`release_cells` reports: ``kind`` is "cell", "bake", "gate", "revert" or
    "halt"; ``position`` is "cell k/N"."""

    kind: Literal["cell", "bake", "gate", "revert", "halt"]
    unit: str
    position: str
    message: str

    @property
    def line(self) -> str:
        return f"{self.unit} ({self.position}): {self.message}"


def release_cells(
    module: str,
    cells: Iterable[str],
    release_cell: Callable[[str], CellRelease],
    *,
    gate: HealthGate,
    bake_seconds: float,
    revert: Callable[[Release, CellRelease, GateResult], str],
    on_event: Callable[[CellEvent], None] | None = None,
) -> CelledOutcome:
    """Release ``module``'s cells in order, each baked and gated after its promotion;
    stop at the first cell that is not promoted or fails its gate (module docstring).
    ``revert(promoted release, the cell's release, gate)`` puts a cell that failed its
    gate back on its previous version (its URL), raising when it cannot."""
    order = cell_order(cells)
    if not order:
        raise ReleaseError(f"{module} has no cells")
    results: list[CellOutcome] = []

    def tell(kind: Any, cell_unit: str, index: int, message: str) -> None:
        if on_event is not None:
            on_event(CellEvent(kind, cell_unit, f"cell {index + 1}/{len(order)}", message))

    def stop(index: int, outcome: CellOutcome) -> CelledOutcome:
        results.append(outcome)
        results.extend(CellOutcome(c, unit(module, c), "not-run") for c in order[index + 1 :])
        tell("halt", outcome.unit, index, f"{outcome.status}: {outcome.reason}; stopping")
        return CelledOutcome(module, results)

    for index, cell in enumerate(order):
        cell_unit = unit(module, cell)
        tell("cell", cell_unit, index, "releasing")
        released = release_cell(cell_unit)
        outcome = released.outcome
        if released.already:
            results.append(CellOutcome(cell, cell_unit, "already", released.reason))
            continue
        if outcome is None or not outcome.promoted:
            reason = released.reason or (outcome.reason if outcome else "not released")
            return stop(index, CellOutcome(cell, cell_unit, "rolled-back", reason, outcome))
        promoted = outcome.release
        if promoted is None:  # promoted without a stored release: nothing to watch
            results.append(CellOutcome(cell, cell_unit, "promoted", outcome.reason, outcome))
            continue
        tell("bake", cell_unit, index, f"baking {bake_seconds:g} s, then its health gate")
        result = gate.bake(promoted, bake_seconds)
        tell("gate", cell_unit, index, f"health gate {result.summary}")

        def ended(status: CellStatus, why: str) -> CellOutcome:
            return CellOutcome(cell, cell_unit, status, why, outcome, result)  # noqa: B023

        if result.passed:
            results.append(ended("promoted", outcome.reason))
            continue
        reason = "health gate: " + "; ".join(result.reasons)
        if result.changed_by is not None:  # someone else's now: neither judged nor reverted
            return stop(index, ended("not-reverted", reason))
        previous = released.previous_version
        try:
            if previous is None:
                raise ReleaseError("the version it ran before is not known")
            url = revert(promoted, released, result)
        except Exception as exc:  # the cell stays on the new version: said, and stopped
            tell("revert", cell_unit, index, f"could NOT be put back on {previous}: {exc}")
            return stop(index, ended("not-reverted", f"{reason}; NOT reverted ({exc})"))
        tell("revert", cell_unit, index, f"put back on {previous} at {url}")
        return stop(index, ended("reverted", reason))
    return CelledOutcome(module, results)


def cell_release(run: Callable[[], DeployResult]) -> CellRelease:
    """One cell's :func:`~relay.release.deploy.deploy` as a :class:`CellRelease`: a cell
    that runs the version already is done; a broken contract, or a deploy that failed
    before any traffic, is not promoted (the cell keeps its version)."""
    from .deploy import AlreadyRunning

    try:
        result = run()
    except AlreadyRunning as exc:
        return CellRelease(None, already=True, reason=str(exc))
    except Exception as exc:  # a failed start, deploy or AWS call: this cell is not released
        return CellRelease(None, reason=f"{type(exc).__name__}: {exc}")
    if result.outcome is None:
        problems = result.contract.problems if result.contract is not None else ()
        detail = "; ".join(f"{p.operation}: {p.check}" for p in problems[:3])
        return CellRelease(
            None,
            result.stable_version,
            result.stable_url,
            reason=f"{result.version} refused before traffic (contract: {detail})",
        )
    return CellRelease(result.outcome, result.stable_version, result.stable_url)
