"""DynamoDB access for gate passes. boto3 is injected; nothing connects at import time.

Gate pass table: ``pass_id`` (key), ``driver_id`` (GSI ``by_driver``), ``revoked``,
``doc`` (the :class:`GatePassPublic` JSON). The loads table belongs to the loads module:
it is only read here, through the item layout that module writes (``doc`` = LoadPublic).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import ClientError

from shared_contracts.gatepass import GatePassPublic
from shared_contracts.loads import LoadPublic

from .config import GatepassSettings


class GatepassRepository:
    def __init__(self, settings: GatepassSettings, *, dynamodb: Any = None) -> None:
        self.settings = settings
        self._dynamodb = dynamodb

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = boto3.resource("dynamodb")
        return self._dynamodb

    @property
    def _passes(self) -> Any:
        return self.dynamodb.Table(self.settings.gatepass_table)

    def get_load(self, load_id: str) -> LoadPublic | None:
        table = self.dynamodb.Table(self.settings.loads_table)
        item = table.get_item(Key={"load_id": load_id}, ConsistentRead=True).get("Item")
        return LoadPublic.model_validate_json(item["doc"]) if item else None

    def get(self, pass_id: str) -> GatePassPublic | None:
        item = self._passes.get_item(Key={"pass_id": pass_id}, ConsistentRead=True).get("Item")
        return GatePassPublic.model_validate_json(item["doc"]) if item else None

    def list_for_driver(self, driver_id: str) -> list[GatePassPublic]:
        kwargs: dict[str, Any] = {
            "IndexName": "by_driver",
            "KeyConditionExpression": "driver_id = :d",
            "ExpressionAttributeValues": {":d": driver_id},
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self._passes.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [GatePassPublic.model_validate_json(i["doc"]) for i in items]

    def create(self, gate_pass: GatePassPublic) -> None:
        # pass ids are random; the condition only guards against overwriting by mistake.
        self._passes.put_item(Item=self._item(gate_pass),
                              ConditionExpression="attribute_not_exists(pass_id)")

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
