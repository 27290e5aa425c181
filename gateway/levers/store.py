"""The levers in the stage's routing-control table (``RELAY_ROUTING_TABLE``, template.yaml
``RoutingControlTable``), beside the region routing controls (:mod:`gateway.regions.control`).

One item per lever (``kind = "lever"``, ``name`` = its id): :class:`~shared_contracts.levers.Lever`.
Every pull and release writes the lever and an audit item (``kind = "audit"``, the same
trail the routing controls write) in one transaction, conditional on the lever's revision,
so no lever moves unrecorded and two operators changing one lever cannot both win. A
released lever keeps its item (``released``) until the table's TTL removes it after
``expires_at``; its revision carries on if it is pulled again meanwhile.
"""

from __future__ import annotations

from typing import Any

from gateway import aws_calls
from gateway.levers.exceptions import LeverConflictError, LeverRefusedError
from gateway.regions.control import CHECK_FAILED, audit_put, transact
from module_kit.pager import kind_items
from shared_contracts.levers import KIND, Lever, LeverAudit

AUDIT = "audit"


class LeverStore(aws_calls.DynamoTable):
    """Synchronous (boto3): the gateway calls it on the AWS thread pool."""

    def load(self) -> list[Lever]:
        """Every lever item, active or not (the caller compares ``expires_at`` with its
        clock: the TTL deletes expired items lazily)."""
        return [Lever.from_item(i) for i in kind_items(self.table, KIND)]

    def get(self, lever_id: str) -> Lever | None:
        item = self.table.get_item(Key={"kind": KIND, "name": lever_id}, ConsistentRead=True).get(
            "Item"
        )
        return None if item is None else Lever.from_item(item)

    def write(
        self,
        lever: Lever,
        *,
        before: Lever | None,
        action: str,
        at: float,
        inactive: str | None = None,
    ) -> Lever:
        """Put ``lever`` (its revision one past ``before``'s) with its audit item, in one
        transaction; :class:`LeverConflictError` if the lever changed since ``before``.
        ``inactive``: a lever that must not be in force at the write (a safety rule's half
        inside the transaction), else :class:`LeverRefusedError` (rule ``every-cell``)."""
        who, why = (
            (lever.released_by, lever.released_why) if lever.released else (lever.who, lever.why)
        )
        if before is None:
            condition: dict[str, Any] = {
                "ConditionExpression": "attribute_not_exists(#n)",
                "ExpressionAttributeNames": {"#n": "name"},
            }
        else:
            condition = {
                "ConditionExpression": "revision = :r",
                "ExpressionAttributeValues": {":r": before.revision},
            }
        checks = [] if inactive is None else [self._not_in_force(inactive, at)]
        items = [
            *checks,
            {"Put": {"TableName": self.table_name, "Item": lever.item(), **condition}},
            # The routing controls' trail names what moved "region": one trail.
            audit_put(self.table_name, at, action, lever.lever_id, who, why, lever=lever.lever_id),
        ]
        failed = transact(self.table, items)
        if failed is not None and checks and failed == CHECK_FAILED:
            raise LeverRefusedError(
                "every-cell",
                f"{inactive} was pulled meanwhile, so {lever.lever_id} could put every "
                "cell on its fallback: read the levers again",
            )
        if failed is not None:
            raise LeverConflictError(f"lever {lever.lever_id} changed meanwhile")
        return lever

    def _not_in_force(self, lever_id: str, at: float) -> dict[str, Any]:
        return {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": {"kind": KIND, "name": lever_id},
                "ConditionExpression": (
                    "attribute_not_exists(#n) OR released = :t OR expires_at <= :now"
                ),
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":t": True, ":now": int(at)},
            }
        }

    def audit(self, limit: int = 50) -> list[LeverAudit]:
        """The newest changes first: the levers' and the regions' (``evacuate:region:<r>``)."""
        out = []
        for i in kind_items(self.table, AUDIT, newest_first=True, limit=limit):
            lever = i.get("lever") or f"evacuate:region:{i.get('region', '?')}"
            out.append(
                LeverAudit(
                    at=i["at"],
                    action=i.get("action", "?"),
                    lever_id=lever,
                    who=i.get("who", ""),
                    why=i.get("why", ""),
                )
            )
        return out
