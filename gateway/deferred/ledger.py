"""The deferred-writes ledger: what became of every write accepted with 202, fleet-wide.

One DynamoDB table (``DeferredWritesLedgerTable`` in template.yaml), partitioned by caller:

- ``write#<tracking_id>``: the write itself and its state, ``pending`` until the replayer
  records ``applied`` or ``refused`` (with the module's status, problem code and detail).
  The driver reads it through ``GET /deferred/{tracking_id}``, operators through
  ``/ops/status`` (the sparse index ``by_open_state`` holds pending and refused writes).
  A refused write keeps its body: nothing acknowledged disappears without a trace.
- ``pending#<module>#<tracking_id>``: present while the write is queued. A caller with a
  pending marker for a module has every later write of theirs to that module queued behind
  it (strongly consistent query), so the live path can never overtake a write still in the
  queue, whichever gateway instance took it. Order is kept per module: a driver's message
  waiting for message to come back does not hold up their trip events, which loads applies
  live.

Every method is synchronous boto3 with socket timeouts; async callers run them through
:func:`gateway.aws_calls.call` with a deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gateway import aws_calls
from shared_contracts.degraded import DeferredRefusal, DeferredState, DeferredWriteStatus

if TYPE_CHECKING:
    from gateway.deferred.queue import DeferredWrite

KEEP_APPLIED_SECONDS = 30 * 24 * 3600  # the driver can look a write up for 30 days
KEEP_REFUSED_SECONDS = 90 * 24 * 3600  # operators have 90 days to deal with a refusal
OPS_LIST_LIMIT = 20
OPS_COUNT_PAGES = 5  # a count beyond a few pages is shown as a floor
_WRITE = "write#"
_PENDING = "pending#"


class LedgerError(Exception):
    """The ledger could not be read or written."""


class _Exists(Exception):
    """A conditional write found its item already there."""


def _pending(module: str) -> str:
    return f"{_PENDING}{module}#"


def _pending_marker(write: DeferredWrite) -> str:
    return _pending(write.module) + write.tracking_id


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class DeferredLedger(aws_calls.DynamoTable):
    def __init__(
        self, table_name: str, *, dynamodb: Any = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(table_name, dynamodb=dynamodb)
        self.wall_clock = wall_clock

    def _call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                raise _Exists from None
            raise LedgerError(f"{self.table_name}: {exc}") from exc
        except BotoCoreError as exc:
            raise LedgerError(f"{self.table_name}: {exc}") from exc

    # --- the live path ------------------------------------------------------------

    def has_pending(self, caller: str, module: str) -> bool:
        """Does ``caller`` have a write to ``module`` still queued? (One strongly consistent
        read.)"""
        page = self._call(
            self.table.query,
            KeyConditionExpression="caller = :c AND begins_with(#i, :p)",
            ExpressionAttributeNames={"#i": "item"},
            ExpressionAttributeValues={":c": caller, ":p": _pending(module)},
            ConsistentRead=True,
            Limit=1,
            ProjectionExpression="#i",
        )
        return bool(page.get("Items"))

    def accept(self, write: DeferredWrite) -> bool:
        """Record ``write`` as pending; False if it was recorded already (a retry)."""
        item = {
            "caller": write.caller,
            "item": _WRITE + write.tracking_id,
            "tracking_id": write.tracking_id,
            "module": write.module,
            "method": write.method,
            "path": write.path,
            "state": DeferredState.PENDING.value,
            "open_state": DeferredState.PENDING.value,
            "accepted_at": write.accepted_at.isoformat(),
            "write": write.model_dump_json(),
        }
        try:
            self._call(
                self.table.meta.client.transact_write_items,
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(caller)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.table_name,
                            "Item": {"caller": write.caller, "item": _pending_marker(write)},
                        }
                    },
                ],
            )
        except _Exists:  # this write is in the ledger already
            return False
        return True

    # --- the replayer -------------------------------------------------------------

    def decide(
        self, write: DeferredWrite, state: DeferredState, refusal: DeferredRefusal | None = None
    ) -> None:
        """Record the outcome and release the caller's queue. Safe to repeat; also records
        a write whose acceptance never reached the ledger."""
        now = self.wall_clock()
        keep = KEEP_REFUSED_SECONDS if state is DeferredState.REFUSED else KEEP_APPLIED_SECONDS
        names = {"#s": "state", "#m": "module", "#w": "write", "#o": "open_state"}
        values: dict[str, Any] = {
            ":s": state.value,
            ":d": _iso(now),
            ":x": int(now + keep),
            ":id": write.tracking_id,
            ":m": write.module,
            ":me": write.method,
            ":p": write.path,
            ":a": write.accepted_at.isoformat(),
            ":w": write.model_dump_json(),
        }
        update = (
            "SET #s = :s, decided_at = :d, expires_at = :x, "
            "tracking_id = if_not_exists(tracking_id, :id), #m = if_not_exists(#m, :m), "
            "#me = if_not_exists(#me, :me), #p = if_not_exists(#p, :p), "
            "accepted_at = if_not_exists(accepted_at, :a), #w = if_not_exists(#w, :w)"
        )
        names |= {"#me": "method", "#p": "path"}
        if refusal is not None:
            update += ", refusal = :r, #o = :s"
            values[":r"] = refusal.model_dump_json()
        else:
            update += " REMOVE #o, refusal"
        self._call(
            self.table.meta.client.transact_write_items,
            TransactItems=[
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": {"caller": write.caller, "item": _WRITE + write.tracking_id},
                        "UpdateExpression": update,
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                },
                {
                    "Delete": {
                        "TableName": self.table_name,
                        "Key": {"caller": write.caller, "item": _pending_marker(write)},
                    }
                },
            ],
        )

    # --- views ----------------------------------------------------------------------

    def status(self, caller: str, tracking_id: str) -> DeferredWriteStatus | None:
        item = self._call(
            self.table.get_item,
            ConsistentRead=True,
            Key={"caller": caller, "item": _WRITE + tracking_id},
        ).get("Item")
        return None if item is None else _status(item)

    def open_writes(
        self, state: DeferredState, limit: int = OPS_LIST_LIMIT
    ) -> tuple[int, bool, list[DeferredWriteStatus]]:
        """(count, whether the count is complete, the newest ``limit``) of pending or
        refused writes across all callers."""
        index = {
            "IndexName": "by_open_state",
            "KeyConditionExpression": "open_state = :s",
            "ExpressionAttributeValues": {":s": state.value},
        }
        newest = self._call(self.table.query, **index, ScanIndexForward=False, Limit=limit).get(
            "Items", []
        )
        count, kwargs = 0, dict(index, Select="COUNT")
        for _ in range(OPS_COUNT_PAGES):
            page = self._call(self.table.query, **kwargs)
            count += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return count, True, [_status(i) for i in newest]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return count, False, [_status(i) for i in newest]


def _status(item: dict[str, Any]) -> DeferredWriteStatus:
    refusal = item.get("refusal")
    return DeferredWriteStatus(
        tracking_id=item["tracking_id"],
        module=item["module"],
        method=item["method"],
        path=item["path"],
        state=DeferredState(item["state"]),
        accepted_at=datetime.fromisoformat(item["accepted_at"]),
        decided_at=datetime.fromisoformat(item["decided_at"]) if item.get("decided_at") else None,
        refusal=DeferredRefusal.model_validate(json.loads(refusal)) if refusal else None,
    )
