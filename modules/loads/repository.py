"""DynamoDB and SQS access for loads. boto3 is injected; nothing connects at import time.

Loads table: ``load_id`` (key), ``driver_id`` (GSI ``by_driver``), ``status``, ``version``,
``doc`` (the :class:`LoadPublic` JSON). Events table: ``load_id`` + ``seq``.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from shared_contracts.loads import LoadEventPublic, LoadPublic
from shared_contracts.notifications import Notification

from .config import LoadsSettings

log = logging.getLogger("relay.loads")


class LoadExistsError(Exception):
    pass


class ConcurrentUpdateError(Exception):
    pass


class LoadsRepository:
    def __init__(self, settings: LoadsSettings, *, dynamodb: Any = None, sqs: Any = None) -> None:
        self.settings = settings
        self._dynamodb = dynamodb
        self._sqs = sqs

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = boto3.resource("dynamodb")
        return self._dynamodb

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = boto3.client("sqs")
        return self._sqs

    @property
    def _loads(self) -> Any:
        return self.dynamodb.Table(self.settings.loads_table)

    def get(self, load_id: str) -> LoadPublic | None:
        item = self._loads.get_item(Key={"load_id": load_id}, ConsistentRead=True).get("Item")
        return LoadPublic.model_validate_json(item["doc"]) if item else None

    def list_for_driver(self, driver_id: str) -> list[LoadPublic]:
        kwargs: dict[str, Any] = {
            "IndexName": "by_driver",
            "KeyConditionExpression": "driver_id = :d",
            "ExpressionAttributeValues": {":d": driver_id},
        }
        items: list[dict[str, Any]] = []
        while True:
            page = self._loads.query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [LoadPublic.model_validate_json(i["doc"]) for i in items]

    def create(self, load: LoadPublic) -> None:
        try:
            self._loads.put_item(
                Item=self._item(load),
                ConditionExpression="attribute_not_exists(load_id)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LoadExistsError(load.load_id) from None
            raise

    def save_event(self, event: LoadEventPublic, expected_version: int) -> None:
        """Write the updated load and its event atomically, if nobody changed it meanwhile."""
        client = self.dynamodb.meta.client
        try:
            client.transact_write_items(TransactItems=[
                {"Put": {
                    "TableName": self.settings.loads_table,
                    "Item": self._item(event.load),
                    "ConditionExpression": "version = :v",
                    "ExpressionAttributeValues": {":v": expected_version},
                }},
                {"Put": {
                    "TableName": self.settings.load_events_table,
                    "Item": {"load_id": event.load_id, "seq": event.seq,
                             "doc": event.model_dump_json(exclude={"load"})},
                    "ConditionExpression": "attribute_not_exists(seq)",
                }},
            ])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                raise ConcurrentUpdateError(event.load_id) from None
            raise

    def enqueue_notification(self, notification: Notification) -> bool:
        """Queue a push notification. Never fails the caller: push is optional."""
        try:
            self.sqs.send_message(
                QueueUrl=self.settings.notifications_queue_url,
                MessageBody=notification.model_dump_json(),
            )
            return True
        except (BotoCoreError, ClientError):
            log.exception("could not queue notification %s", notification.notification_id)
            return False

    @staticmethod
    def _item(load: LoadPublic) -> dict[str, Any]:
        return {
            "load_id": load.load_id,
            "driver_id": load.driver_id,
            "status": load.status.value,
            "version": load.version,
            "doc": load.model_dump_json(),
        }
