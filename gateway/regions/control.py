"""The routing controls: which regions serve drivers, as operators set them.

One item per region in the routing-control table (``RoutingControlTable`` in template.yaml,
a DynamoDB global table: every region's gateways read their own replica): ``kind =
"region"``, ``name`` = the region, ``serving``, ``revision``, who changed it, why and when.
A region with no item serves. Each change also writes an audit item (``kind = "audit"``,
``name`` = "<ISO time>#<id>"), in the same transaction, so no lever moves unrecorded.

The safety rule (as Route 53 ARC's assertion rule "at least one routing control on"): a
region is evacuated only while another region of the stage serves, checked in the same
transaction as the change (a ``ConditionCheck`` on that region's item), so two operators
evacuating two regions at once cannot both succeed against one replica. Levers are
pulled against one replica (``relay region`` uses the stage's first reachable region;
the operator API, its own region's): two replicas written at once could each pass the rule
before replication joins them, the window global tables leave (docs/regions.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from gateway import aws_calls
from module_kit.pager import kind_items

Action = Literal["evacuate", "restore"]
REGION_NAME = r"^[a-z]{2}(-[a-z]+)+-\d$"


class SafetyRuleError(Exception):
    """The change would leave no region serving; nothing was written."""


class ControlConflict(Exception):
    """Another change to the same controls came first; read them again and retry."""


@dataclass(frozen=True, slots=True)
class RegionControl:
    """One region's routing control. Times are wall-clock epoch seconds."""

    region: str
    serving: bool = True
    revision: int = 0
    updated_by: str = ""
    reason: str = ""
    updated_at: float = 0.0

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: str  # ISO 8601, UTC
    action: Action
    region: str
    who: str
    why: str

    def view(self) -> dict[str, Any]:
        return asdict(self)


def serving(controls: Mapping[str, RegionControl], region: str) -> bool:
    """Whether ``region`` serves (a region with no control does)."""
    control = controls.get(region)
    return control is None or control.serving


class RoutingControlSource(Protocol):
    """What a gateway reads (synchronous, boto3: called on the AWS thread pool)."""

    def load(self) -> dict[str, RegionControl]: ...


class RoutingControls(aws_calls.DynamoTable):
    """The routing-control table (``RELAY_ROUTING_TABLE``)."""

    KIND = "region"
    AUDIT = "audit"

    def load(self) -> dict[str, RegionControl]:
        return {c.region: c for c in (_control(i) for i in kind_items(self.table, self.KIND))}

    def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The newest changes first."""
        items = kind_items(self.table, self.AUDIT, newest_first=True, limit=limit)
        return [
            AuditEntry(
                at=i["at"], action=i["action"], region=i["region"], who=i["who"], why=i["why"]
            )
            for i in items
        ]

    def evacuate(
        self, region: str, *, regions: Sequence[str], who: str, why: str, now: float | None = None
    ) -> RegionControl:
        """Stop ``region`` serving: its traffic goes to the other regions. Refused
        (:class:`SafetyRuleError`) unless another region of ``regions`` serves."""
        return self._change(region, False, regions=regions, who=who, why=why, now=now)

    def restore(
        self, region: str, *, regions: Sequence[str], who: str, why: str, now: float | None = None
    ) -> RegionControl:
        """Let ``region`` serve again."""
        return self._change(region, True, regions=regions, who=who, why=why, now=now)

    def _change(
        self,
        region: str,
        serve: bool,
        *,
        regions: Sequence[str],
        who: str,
        why: str,
        now: float | None,
    ) -> RegionControl:
        if region not in regions:
            raise ValueError(f"{region} is not one of this stage's regions ({', '.join(regions)})")
        if not who or not why:
            raise ValueError("a routing change needs who and why")
        at = time.time() if now is None else now
        controls = self.load()
        current = controls.get(region, RegionControl(region))
        action: Action = "restore" if serve else "evacuate"
        checks: list[dict[str, Any]] = []
        if not serve:
            others = [r for r in regions if r != region and serving(controls, r)]
            if not others:
                raise SafetyRuleError(
                    f"evacuating {region} would leave no region serving "
                    f"({', '.join(regions)}); restore another region first"
                )
            checks.append(self._still_serving(controls.get(others[0], RegionControl(others[0]))))
        changed = RegionControl(
            region=region,
            serving=serve,
            revision=current.revision + 1,
            updated_by=who,
            reason=why,
            updated_at=at,
        )
        items = [
            *checks,
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": _item(changed),
                    **_expect_revision(current.revision),
                }
            },
            audit_put(self.table_name, at, action, region, who, why),
        ]
        failed = transact(self.table, items)
        if failed is not None and checks and failed == CHECK_FAILED:
            raise SafetyRuleError(
                f"evacuating {region} would leave no region serving: "
                "another region was evacuated meanwhile"
            )
        if failed is not None:
            raise ControlConflict(f"the routing control of {region} changed meanwhile")
        return changed

    def _still_serving(self, other: RegionControl) -> dict[str, Any]:
        """The safety rule's half inside the transaction: ``other`` serves, unchanged."""
        return {
            "ConditionCheck": {
                "TableName": self.table_name,
                "Key": {"kind": self.KIND, "name": other.region},
                "ConditionExpression": "attribute_not_exists(#n) OR (serving = :t)",
                "ExpressionAttributeNames": {"#n": "name"},
                "ExpressionAttributeValues": {":t": True},
            }
        }


CHECK_FAILED = "ConditionalCheckFailed"


def audit_put(
    table_name: str, at: float, action: str, region: str, who: str, why: str, **more: Any
) -> dict[str, Any]:
    """A transaction's Put of one audit item (``kind = "audit"``) of the routing-control
    table's trail: the region controls' changes and the levers' (``more``: their fields)."""
    iso = datetime.fromtimestamp(at, UTC).isoformat()
    item = {
        "kind": "audit",
        "name": f"{iso}#{uuid.uuid4().hex[:8]}",
        "at": iso,
        "action": action,
        "region": region,
        **more,
        "who": who,
        "why": why,
    }
    return {"Put": {"TableName": table_name, "Item": item}}


def transact(table: Any, items: list[dict[str, Any]]) -> str | None:
    """Write ``items`` in one transaction (through ``table``'s client, which takes Python
    values); None when it went through, else why its first item was refused
    (``CHECK_FAILED`` for a failed condition)."""
    client = table.meta.client
    try:
        client.transact_write_items(TransactItems=items)
    except client.exceptions.TransactionCanceledException as exc:
        reasons = exc.response.get("CancellationReasons") or [{}]
        return str(reasons[0].get("Code") or "TransactionCanceled")
    return None


def _expect_revision(revision: int) -> dict[str, Any]:
    if revision == 0:
        return {
            "ConditionExpression": "attribute_not_exists(#n)",
            "ExpressionAttributeNames": {"#n": "name"},
        }
    return {
        "ConditionExpression": "revision = :r",
        "ExpressionAttributeValues": {":r": revision},
    }


def _item(control: RegionControl) -> dict[str, Any]:
    return {
        "kind": RoutingControls.KIND,
        "name": control.region,
        "serving": control.serving,
        "revision": control.revision,
        "updated_by": control.updated_by,
        "reason": control.reason,
        "updated_at": str(control.updated_at),  # no float in DynamoDB's resource API
    }


def _control(item: dict[str, Any]) -> RegionControl:
    return RegionControl(
        region=item["name"],
        serving=bool(item.get("serving", True)),
        revision=int(item.get("revision", 0)),
        updated_by=item.get("updated_by", ""),
        reason=item.get("reason", ""),
        updated_at=float(item.get("updated_at", 0)),
    )
