"""Pulling and releasing levers: the type's target and safety rules checked
(:mod:`gateway.levers.rules`), then the write with its audit item
(:class:`~gateway.levers.store.LeverStore`). A region's evacuation is the routing controls'
own lever (:class:`~gateway.regions.control.RoutingControls`, with its own safety rule and
audit): pulled and released here too, so the lever list shows it.

Synchronous (boto3): the operator API calls it on the AWS thread pool. The rules read the
levers in force just before the write; ``every-cell`` is checked again inside the write's
transaction (one other cell's lever still not in force), so two operators pulling the last
two cells' levers at once cannot both succeed against one replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.levers import rules
from gateway.levers.exceptions import (
    InvalidLeverError,
    LeverConflictError,
    LeverRefusedError,
    UnknownLeverError,
)
from gateway.levers.store import LeverStore
from gateway.regions.control import (
    ControlConflict,
    RegionControl,
    RoutingControls,
    SafetyRuleError,
)
from gateway.routing.routes import RouteTable
from shared_contracts.levers import Lever, LeverAudit, LeverPull, LeverType, lever_id


class LeverControl:
    def __init__(
        self,
        store: LeverStore,
        routes: RouteTable,
        *,
        routing: RoutingControls | None = None,
        regions: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.routes = routes
        self.routing = routing  # the region routing controls (None: no regions here)
        self.regions = list(regions) if routing is not None else []
        self.clock = clock

    def active(self) -> list[Lever]:
        """The levers in force now, the evacuated regions' included, by id."""
        now = self.clock()
        levers = [lever for lever in self.store.load() if lever.active(now)]
        if self.routing is not None:
            levers += [region_lever(c) for c in self.routing.load().values() if not c.serving]
        return sorted(levers, key=lambda lever: lever.lever_id)

    def audit(self, limit: int = 20) -> list[LeverAudit]:
        return self.store.audit(limit)

    def pull(self, pull: LeverPull, who: str) -> Lever:
        """Pull (or pull again: renewed from now, with the new reason) a lever."""
        if not who:
            raise ValueError("a lever needs who pulls it")
        kind, target = rules.normalise(pull.type, pull.target)
        levers = self.active()
        rules.check(kind, target, self.routes, levers, self.regions)
        now = self.clock()
        if kind is LeverType.EVACUATE:
            return self._region(target, True, who, pull.reason, now)
        the_id = lever_id(kind, target)
        inactive = (
            rules.unforced_cell(target, self.routes, levers) if kind is LeverType.FALLBACK else None
        )
        before = self.store.get(the_id)
        lever = Lever(
            lever_id=the_id,
            type=kind,
            target=target,
            who=who,
            why=pull.reason,
            pulled_at=int(now),
            expires_at=int(now) + pull.ttl,
            revision=1 if before is None else before.revision + 1,
        )
        return self.store.write(lever, before=before, action="pull", at=now, inactive=inactive)

    def release(self, the_id: str, who: str, why: str) -> Lever:
        """Let a lever go before it expires. :class:`UnknownLeverError` if it is not in
        force."""
        now = self.clock()
        kind, _, target = the_id.partition(":")
        if kind == LeverType.EVACUATE.value:
            kind_, target = rules.normalise(LeverType.EVACUATE, target)
            if kind_ is LeverType.FALLBACK:
                the_id = lever_id(kind_, target)
            else:
                if self.routing is None or target.removeprefix(rules.REGION) not in self.regions:
                    raise UnknownLeverError(f"no lever {the_id}")
                control = self.routing.load().get(target.removeprefix(rules.REGION))
                if control is None or control.serving:
                    raise UnknownLeverError(f"{target} is not evacuated")
                return self._region(target, False, who, why, now)
        before = self.store.get(the_id)
        if before is None or not before.active(now):
            raise UnknownLeverError(f"no lever {the_id} in force")
        released = before.model_copy(
            update={
                "released": True,
                "released_by": who,
                "released_why": why,
                "revision": before.revision + 1,
            }
        )
        return self.store.write(released, before=before, action="release", at=now)

    def _region(self, target: str, evacuate: bool, who: str, why: str, now: float) -> Lever:
        routing = self.routing
        if routing is None:
            raise InvalidLeverError("regions are not configured here (no routing controls)")
        region = target.removeprefix(rules.REGION)
        change = routing.evacuate if evacuate else routing.restore
        try:
            control = change(region, regions=self.regions, who=who, why=why, now=now)
        except SafetyRuleError as exc:
            raise LeverRefusedError("last-region", str(exc)) from None
        except ControlConflict as exc:
            raise LeverConflictError(str(exc)) from None
        return region_lever(control)


def region_lever(control: RegionControl) -> Lever:
    """An evacuated region's routing control as a lever (it never expires by itself: traffic
    goes back to a region only when an operator restores it)."""
    return Lever(
        lever_id=lever_id(LeverType.EVACUATE, rules.REGION + control.region),
        type=LeverType.EVACUATE,
        target=rules.REGION + control.region,
        who=control.updated_by,
        why=control.reason,
        pulled_at=int(control.updated_at),
        expires_at=None,
        revision=control.revision,
        released=control.serving,
    )
