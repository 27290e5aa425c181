"""An in-memory lever store (the unit tier's stand-in for the routing-control table), with
the same revision rule as the table's transaction."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from gateway.levers import LeverConflictError, LeverRefusedError, LeverStore
from gateway.routing.routes import RouteTable
from shared_contracts.levers import Lever, LeverAudit
from tests.unit.gateway.conftest import UPSTREAMS

CELLS = "cell-1=http://cell-1.test,cell-2=http://cell-2.test,cell-3=http://cell-3.test"


def celled_routes(routes_file: Path) -> RouteTable:
    """routes.toml with loads in three cells and dispatch's assignments deferred (so the
    critical rule lets a loads lever through and the cell rule is what is tested)."""
    base = RouteTable.load(routes_file, env={**UPSTREAMS, "RELAY_UPSTREAM_LOADS": CELLS})
    data = {
        "modules": {n: m.model_dump(exclude={"name"}) for n, m in base.modules.items()},
        "routes": [
            r.model_dump() | ({"fallback": {"POST": "deferred"}} if not r.fallback else {})
            for r in base.routes
        ],
    }
    return RouteTable.from_dict(json.loads(json.dumps(data, default=list)), env={})


class FakeLeverStore(LeverStore):
    def __init__(self, *levers: Lever) -> None:
        super().__init__("fake-routing")
        self.items = {lever.lever_id: lever for lever in levers}
        self.trail: list[LeverAudit] = []
        self.reads = 0

    def load(self) -> list[Lever]:
        self.reads += 1
        return list(self.items.values())

    def get(self, lever_id: str) -> Lever | None:
        return self.items.get(lever_id)

    def write(
        self,
        lever: Lever,
        *,
        before: Lever | None,
        action: str,
        at: float,
        inactive: str | None = None,
    ) -> Lever:
        if inactive is not None and (held := self.items.get(inactive)) and held.active(at):
            raise LeverRefusedError("every-cell", f"{inactive} was pulled meanwhile")
        current = self.items.get(lever.lever_id)
        if (current is None) != (before is None) or (
            current is not None and before is not None and current.revision != before.revision
        ):
            raise LeverConflictError(f"lever {lever.lever_id} changed meanwhile")
        self.items[lever.lever_id] = lever
        who, why = (
            (lever.released_by, lever.released_why) if lever.released else (lever.who, lever.why)
        )
        iso = datetime.fromtimestamp(at, UTC).isoformat()
        self.trail.insert(
            0, LeverAudit(at=iso, action=action, lever_id=lever.lever_id, who=who, why=why)
        )
        return lever

    def audit(self, limit: int = 50) -> list[LeverAudit]:
        return self.trail[:limit]
