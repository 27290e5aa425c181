"""An in-memory lever store (the unit tier's stand-in for the routing-control table), with
the same revision rule as the table's transaction."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.levers import LeverConflictError, LeverStore
from shared_contracts.levers import Lever, LeverAudit


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

    def write(self, lever: Lever, *, before: Lever | None, action: str, at: float) -> Lever:
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
