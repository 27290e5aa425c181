"""What each lever type may target, and the safety rules that refuse a pull.

- ``shed`` a tier: ``optional``, ``deferrable`` or ``degradable``. Rule
  ``critical-never-shed``: the critical tier (loads, gate passes) is never shed.
- ``fallback`` a module (``loads``) or one cell of a celled module (``loads/cell-1``). Rule
  ``critical-route-without-fallback``: a critical module is forced onto its fallbacks only
  when every one of its routes names one; a route that names none would answer nothing
  but 503 for as long as the lever holds, a critical function switched off by hand.
  Rule ``every-cell``: the last cell of a celled module not yet on a fallback lever is
  refused; all cells at once is the whole module, which is one
  lever (``fallback:loads``), judged by the module's rule and read as what it is in the
  audit, never assembled cell by cell (cells exist so one lever reaches one cell's drivers).
- ``pause`` ``notifications``: its worker keeps its messages queued until released.
- ``evacuate`` ``region:<name>`` (the routing controls, with their own safety rule
  ``last-region``: never no region serving) or ``cell:<module>/<cell>``, which is a
  ``fallback`` lever on that cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.levers.exceptions import InvalidLeverError, LeverRefusedError
from gateway.routing.routes import RouteTable, Tier
from shared_contracts.levers import Lever, LeverType

SHED_TIERS = frozenset({Tier.OPTIONAL.value, Tier.DEFERRABLE.value, Tier.DEGRADABLE.value})
PAUSE_TARGETS = frozenset({"notifications"})
REGION = "region:"
CELL = "cell:"


def normalise(kind: LeverType, target: str) -> tuple[LeverType, str]:
    """The lever a pull really is: evacuating a cell is a fallback lever on it."""
    if kind is LeverType.EVACUATE and target.startswith(CELL):
        return LeverType.FALLBACK, target.removeprefix(CELL)
    return kind, target


def check(
    kind: LeverType,
    target: str,
    routes: RouteTable,
    active: Iterable[Lever],
    regions: Sequence[str] = (),
) -> None:
    """Raise :class:`InvalidLeverError` when ``target`` names nothing of this type, and
    :class:`LeverRefusedError` when a safety rule refuses the pull (``active``: the levers
    in force now)."""
    if kind is LeverType.SHED:
        if target == Tier.CRITICAL.value:
            raise LeverRefusedError(
                "critical-never-shed",
                "the critical tier (loads, gate passes) is never shed; "
                "a fallback lever serves a critical module from its fallbacks instead",
            )
        if target not in SHED_TIERS:
            raise InvalidLeverError(f"shed targets a tier: {', '.join(sorted(SHED_TIERS))}")
    elif kind is LeverType.FALLBACK:
        _check_fallback(target, routes, active)
    elif kind is LeverType.PAUSE:
        if target not in PAUSE_TARGETS:
            raise InvalidLeverError(f"pause targets {', '.join(sorted(PAUSE_TARGETS))}")
    elif kind is LeverType.EVACUATE:
        region = target.removeprefix(REGION)
        if not target.startswith(REGION):
            raise InvalidLeverError("evacuate targets region:<name> or cell:<module>/<cell>")
        if region not in regions:
            raise InvalidLeverError(
                f"{region} is not one of this stage's regions ({', '.join(regions) or 'none'})"
            )


def _check_fallback(target: str, routes: RouteTable, active: Iterable[Lever]) -> None:
    module_name, _, cell = target.partition("/")
    module = routes.modules.get(module_name)
    if module is None or (cell and cell not in module.cells):
        units = sorted({*routes.modules, *routes.units()})
        raise InvalidLeverError(f"no module or cell {target} (one of {', '.join(units)})")
    if module.tier is Tier.CRITICAL:
        bare = [r.prefix for r in routes.routes if r.module == module_name and not r.fallback]
        if bare:
            raise LeverRefusedError(
                "critical-route-without-fallback",
                f"{module_name} is critical and {', '.join(sorted(bare))} names no fallback: "
                "forced onto its fallbacks it would answer only 503",
            )
    if cell:
        forced = {lever.target for lever in active if lever.type is LeverType.FALLBACK} | {target}
        if module_name not in forced and all(module.unit(c) in forced for c in module.cells):
            raise LeverRefusedError(
                "every-cell",
                f"this would put every cell of {module_name} on its fallback; "
                f"that is one lever, fallback:{module_name}",
            )


def unforced_cell(target: str, routes: RouteTable, active: Iterable[Lever]) -> str | None:
    """For a cell's fallback lever: the lever id of another cell of its module not on its
    fallback now, which must still not be when the lever is written (``every-cell`` inside
    the transaction); None when the rule does not apply (not a cell, or the whole module is
    on a lever already)."""
    module_name, _, cell = target.partition("/")
    module = routes.modules.get(module_name)
    if not cell or module is None:
        return None
    forced = {lever.target for lever in active if lever.type is LeverType.FALLBACK}
    if module_name in forced:
        return None
    for other in module.cells:
        unit = module.unit(other)
        if unit != target and unit not in forced:
            return f"{LeverType.FALLBACK.value}:{unit}"
    return None
