"""A staged release across modules, from a plan file in the repository
(``releases/plan.toml``): the stages in order, least critical module first, each with its
policy (the plan's ``[defaults]`` merged with the stage's own settings), and bake time
between stages. ``relay release`` and the production pipeline read the same file.

``run_plan`` runs the stages one after another and halts at the first stage that is not
promoted; the stages promoted before it stay promoted (each module's release stands on its
own), the rest are not run.

The format::

    [defaults]                 # any Policy setting; each stage may override it
    steps = [1, 10, 50, 100]
    interval_seconds = 60
    bake_seconds = 300

    [[stage]]
    module = "message"
    [[stage]]
    module = "navigate"
    interval_seconds = 120     # this stage only
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .controller import Outcome
from .exceptions import PlanError, PolicyError
from .policy import Policy

DEFAULT_PLAN_PATH = Path("releases/plan.toml")
TOP_LEVEL_KEYS = ("defaults", "stage")
_NUMBER_SETTINGS = {
    "interval_seconds",
    "max_success_drop",
    "max_p99_ratio",
    "min_p99_delta_ms",
    "min_success_rate",
    "tick_seconds",
    "bake_seconds",
    "cell_bake_seconds",
}
_INTEGER_SETTINGS = {"min_calls", "min_latency_calls", "max_quiet_intervals"}

StageStatus = Literal["promoted", "rolled-back", "not-run"]


@dataclass(frozen=True)
class Stage:
    """One module's release in a plan, with its merged policy."""

    module: str
    policy: Policy


@dataclass(frozen=True)
class Plan:
    stages: list[Stage]

    @property
    def modules(self) -> list[str]:
        return [stage.module for stage in self.stages]


@dataclass(frozen=True)
class StageOutcome:
    """A stage's end: promoted, rolled back (or stopped by someone else), or not run
    because an earlier stage was not promoted."""

    module: str
    status: StageStatus
    outcome: Outcome | None = None


@dataclass(frozen=True)
class PlanOutcome:
    stages: list[StageOutcome] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """Every stage was promoted."""
        return all(stage.status == "promoted" for stage in self.stages)

    @property
    def halted_at(self) -> str | None:
        """The module of the stage that was not promoted, if any."""
        return next((s.module for s in self.stages if s.status == "rolled-back"), None)


@dataclass(frozen=True)
class PlanEvent:
    """What ``run_plan`` reports as it goes: ``kind`` is "stage", "done", "bake" or
    "halt"; ``seconds`` is the bake time for "bake"."""

    kind: Literal["stage", "done", "bake", "halt"]
    module: str
    message: str
    seconds: float = 0.0


# -- parsing ---------------------------------------------------------------------------


def load_plan(path: Path = DEFAULT_PLAN_PATH, *, modules: Collection[str] | None = None) -> Plan:
    """Read and parse a plan file; a :class:`PlanError` names the file and the bad key."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan: {exc.strerror or exc}") from exc
    try:
        return parse_plan(text, modules=modules)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from exc


def parse_plan(text: str, *, modules: Collection[str] | None = None) -> Plan:
    """Parse a plan's TOML. ``modules``, when given, are the module names a stage may
    name."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"not valid TOML: {exc}") from exc
    _unknown(data, TOP_LEVEL_KEYS, "the plan")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise PlanError("[defaults] must be a table")
    settings = _settings(defaults, "[defaults]")
    try:
        Policy(**settings)
    except PolicyError as exc:
        raise PlanError(f"[defaults]: {exc}") from exc
    raw_stages = data.get("stage", [])
    if not isinstance(raw_stages, list) or not all(isinstance(s, Mapping) for s in raw_stages):
        raise PlanError("stages must be [[stage]] tables")
    if not raw_stages:
        raise PlanError("the plan has no [[stage]]")
    stages: list[Stage] = []
    seen: set[str] = set()
    for number, raw in enumerate(raw_stages, start=1):
        module = raw.get("module")
        where = f"stage {number}" + (f" ({module})" if isinstance(module, str) else "")
        if not isinstance(module, str) or not module:
            raise PlanError(f"{where}: module must be a module name, got {module!r}")
        if modules is not None and module not in modules:
            raise PlanError(
                f"{where}: module {module!r} is not one of {', '.join(sorted(modules))}"
            )
        if module in seen:
            raise PlanError(f"{where}: module {module!r} is already in an earlier stage")
        seen.add(module)
        own = {key: value for key, value in raw.items() if key != "module"}
        try:
            policy = Policy(**{**settings, **_settings(own, where)})
        except PolicyError as exc:
            raise PlanError(f"{where}: {exc}") from exc
        stages.append(Stage(module, policy))
    return Plan(stages)


def _unknown(table: Mapping[str, Any], allowed: Collection[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise PlanError(
                f"{where}: unknown key {key!r} (expected one of {', '.join(sorted(allowed))})"
            )


def _settings(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A table's policy settings, type-checked, as Policy's keyword arguments."""
    _unknown(table, Policy.setting_names(), where)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "steps":
            if not isinstance(value, list) or not all(_is_number(v) for v in value):
                raise PlanError(f"{where}: steps must be a list of numbers, got {value!r}")
            out[key] = tuple(float(v) for v in value)
        elif key in _INTEGER_SETTINGS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise PlanError(f"{where}: {key} must be an integer, got {value!r}")
            out[key] = value
        elif key in _NUMBER_SETTINGS:
            if not _is_number(value):
                raise PlanError(f"{where}: {key} must be a number, got {value!r}")
            out[key] = float(value)
    return out


def settings_from_pairs(pairs: list[str], where: str = "--set") -> dict[str, Any]:
    """Policy settings given as ``name=value`` pairs (a command line's ``--set``), each value
    read as TOML (``steps=[10, 100]``, ``interval_seconds=5``), checked as a plan's are."""
    table: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise PlanError(f"{where}: expected name=value, got {pair!r}")
        try:
            table |= tomllib.loads(f"{name.strip()} = {value.strip()}")
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{where}: {pair!r} is not name=value ({exc})") from None
    return _settings(table, where)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- running ---------------------------------------------------------------------------


def run_plan(
    plan: Plan,
    release_stage: Callable[[Stage], Outcome],
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_event: Callable[[PlanEvent], None] | None = None,
) -> PlanOutcome:
    """Release each stage in order (``release_stage`` runs one module's release), baking
    ``bake_seconds`` after each promoted stage before the next; halt at the first stage
    that is not promoted, leaving the earlier ones promoted and the later ones not run."""

    def tell(event: PlanEvent) -> None:
        if on_event is not None:
            on_event(event)

    results: list[StageOutcome] = []
    for index, stage in enumerate(plan.stages):
        tell(PlanEvent("stage", stage.module, f"stage {index + 1}/{len(plan.stages)}"))
        outcome = release_stage(stage)
        if not outcome.promoted:
            results.append(StageOutcome(stage.module, "rolled-back", outcome))
            results.extend(StageOutcome(s.module, "not-run") for s in plan.stages[index + 1 :])
            tell(PlanEvent("halt", stage.module, f"not promoted: {outcome.reason}"))
            return PlanOutcome(results)
        results.append(StageOutcome(stage.module, "promoted", outcome))
        tell(PlanEvent("done", stage.module, outcome.reason))
        if index + 1 < len(plan.stages) and stage.policy.bake_seconds > 0:
            bake = stage.policy.bake_seconds
            tell(PlanEvent("bake", stage.module, f"baking {bake:g} s", bake))
            _wait(bake, clock, sleep)
    return PlanOutcome(results)


def _wait(seconds: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Sleep until ``seconds`` have passed on ``clock`` (a sleep may wake early)."""
    end = clock() + seconds
    while (left := end - clock()) > 0:
        sleep(left)
