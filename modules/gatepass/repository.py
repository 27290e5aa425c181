"""DynamoDB access for gate passes. boto3 is injected; nothing connects at import time.

Gate pass table: ``pass_id`` (key), ``driver_id`` (GSI ``by_driver``), ``revoked``,
``doc`` (the :class:`GatePassPublic` JSON). One more item, ``pass_id`` = :data:`KEYS_ITEM`
(no pass id has a ``#``, and it has no ``driver_id``, so no driver's read finds it), holds
the published keys (``doc``: the :class:`Jwks` JSON, ``published_at`` in epoch ms): the
table's stream carries them to the gateway's fallback store like passes and revocations.
The loads table belongs to the loads module: it is only read here, through the item layout
that module writes (``doc`` = the load JSON, read through the tolerant
:class:`~shared_contracts.loads.LoadView`: only the fields a pass needs). On a celled
stage it is one table per cell, and a request reads the one its identity's cell names
(:mod:`module_kit.cells`): a driver's read never leaves their cell.

Reads for a driver ask DynamoDB for the item *if* its ``driver_id`` is theirs (a Query on
the key with a filter on ``driver_id``): another driver's pass or load comes back exactly
as a missing one does, empty, so neither the module's work nor its timing tells them apart.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from module_kit import aws
from module_kit.cells import CellTables
from module_kit.pager import query_items
from shared_contracts.gatepass import GatePassPublic, Jwks
from shared_contracts.identity import IdentityContext, Role
from shared_contracts.loads import LoadView

from .config import GatepassSettings

KEYS_ITEM = "keys#jwks"


class GatepassRepository:
    def __init__(self, settings: GatepassSettings, *, dynamodb: Any = None) -> None:
        self.settings = settings
        self.loads_tables: CellTables = settings.loads_tables
        self._dynamodb = dynamodb

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = aws.resource("dynamodb")
        return self._dynamodb

    @property
    def _passes(self) -> Any:
        return self.dynamodb.Table(self.settings.gatepass_table)

    def get_load(self, load_id: str, identity: IdentityContext) -> LoadView | None:
        """``load_id`` as ``identity`` may see it; None if it may not, or it does not exist.

        A driver sees their own loads only, read from their cell's table alone (another
        driver's load, or one in another cell, is answered as a missing one). Gates,
        dispatch and ops see any driver's, from every cell in turn on a celled stage.
        """
        owner = identity.driver if identity.role is Role.DRIVER else None

        def read(table: str) -> dict[str, Any] | None:
            if owner is not None:
                return _owned_item(self.dynamodb.Table(table), "load_id", load_id, owner)
            got = self.dynamodb.Table(table).get_item(Key={"load_id": load_id}, ConsistentRead=True)
            item: dict[str, Any] | None = got.get("Item")
            return item

        item = self.loads_tables.read(identity, read)
        return LoadView.model_validate_json(item["doc"]) if item else None

    def get(self, pass_id: str) -> GatePassPublic | None:
        """Any driver's pass (for gates, dispatch and ops)."""
        if "#" in pass_id:  # the keys item, never a pass
            return None
        item = self._passes.get_item(Key={"pass_id": pass_id}, ConsistentRead=True).get("Item")
        return GatePassPublic.model_validate_json(item["doc"]) if item else None

    def get_for_driver(self, pass_id: str, driver_id: str) -> GatePassPublic | None:
        """``pass_id`` if it is ``driver_id``'s; None if it is not, or does not exist."""
        item = _owned_item(self._passes, "pass_id", pass_id, driver_id)
        return GatePassPublic.model_validate_json(item["doc"]) if item else None

    def list_for_driver(self, driver_id: str) -> list[GatePassPublic]:
        items = query_items(
            self._passes,
            IndexName="by_driver",
            KeyConditionExpression=Key("driver_id").eq(driver_id),
        )
        return [GatePassPublic.model_validate_json(i["doc"]) for i in items]

    def create(self, gate_pass: GatePassPublic) -> GatePassPublic:
        """Store ``gate_pass`` unless its id is taken; return the pass stored under the id.

        Ids of passes issued with an idempotency key derive from the key, so a second
        application of the key finds the first pass here and gets it back (nothing is
        written). Random ids never collide: the condition only guards against overwriting.
        """
        try:
            self._passes.put_item(
                Item=self._item(gate_pass), ConditionExpression="attribute_not_exists(pass_id)"
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            stored = self.get(gate_pass.pass_id)
            if stored is None:  # deleted in between: nothing to answer with
                raise
            return stored
        return gate_pass

    def publish_keys(self, jwks: Jwks, published_at_ms: int) -> bool:
        """Store ``jwks`` as the published keys unless they are already stored; True if
        written. Unchanged keys write nothing, so the stream carries only real changes."""
        doc = jwks.model_dump_json()
        try:
            self._passes.put_item(
                Item={"pass_id": KEYS_ITEM, "doc": doc, "published_at": published_at_ms},
                ConditionExpression="attribute_not_exists(pass_id) OR doc <> :doc",
                ExpressionAttributeValues={":doc": doc},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def mark_revoked(self, gate_pass: GatePassPublic) -> bool:
        """Store ``gate_pass`` as revoked. False if no such pass exists."""
        revoked = gate_pass.model_copy(update={"revoked": True})
        try:
            self._passes.update_item(
                Key={"pass_id": gate_pass.pass_id},
                UpdateExpression="SET revoked = :t, doc = :doc",
                ConditionExpression="attribute_exists(pass_id)",
                ExpressionAttributeValues={":t": True, ":doc": revoked.model_dump_json()},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    @staticmethod
    def _item(gate_pass: GatePassPublic) -> dict[str, Any]:
        return {
            "pass_id": gate_pass.pass_id,
            "driver_id": gate_pass.driver_id,
            "revoked": gate_pass.revoked,
            "doc": gate_pass.model_dump_json(),
        }


def _owned_item(table: Any, key: str, value: str, driver_id: str) -> dict[str, Any] | None:
    """The item under ``key = value`` if its ``driver_id`` is ``driver_id``, else None.

    DynamoDB applies the owner filter: another driver's item is answered exactly like a
    missing one (empty), with the read units and the single round trip of a GetItem.
    """
    items = table.query(
        KeyConditionExpression=Key(key).eq(value),
        FilterExpression=Attr("driver_id").eq(driver_id),
        ConsistentRead=True,
    )["Items"]
    item = items[0] if items else None
    return item if item is not None and item.get("driver_id") == driver_id else None
