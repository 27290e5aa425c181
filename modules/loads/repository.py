"""DynamoDB and SQS access for loads. boto3 is injected; nothing connects at import time.

Loads table: ``load_id`` (key), ``driver_id`` (GSI ``by_driver``), ``status``, ``version``,
``doc`` (the :class:`LoadPublic` JSON), and ``event_keys``: a map from the key id of each
event applied with an idempotency key to that event's ``seq`` (at most
:data:`MAX_EVENT_KEYS`, the newest; a load takes at most 40 events). It is not part of the
public document: it lets a second application of a keyed event find the first, checked in
the same transaction that writes the event. ``seen_at``: when the driver first read the
load live (:meth:`LoadsRepository.mark_seen`; an event's write, which replaces the item,
drops it, but a load with an event is no longer new). Events table: ``load_id`` + ``seq``, ``doc``
(the event without its load) and ``event_key`` when it had one.

Reads for a driver ask DynamoDB for the item *if* its ``driver_id`` is theirs (a Query on
the key with a filter on ``driver_id``): another driver's load comes back exactly as a
missing one does, empty, so neither the module's work nor its timing tells them apart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import BotoCoreError, ClientError

from module_kit import aws
from module_kit.pager import query_items
from shared_contracts.loads import LoadEventPublic, LoadPublic
from shared_contracts.notifications import Notification

from .config import LoadsSettings

log = logging.getLogger("relay.loads")

MAX_EVENT_KEYS = 64


class LoadExistsError(Exception):
    pass


class ConcurrentUpdateError(Exception):
    pass


@dataclass(frozen=True)
class StoredLoad:
    """A load as stored: the public document, the key ids of its keyed events, and whether
    its driver has read it live yet (``seen_at`` on the item)."""

    load: LoadPublic
    event_keys: dict[str, int] = field(default_factory=dict)
    seen: bool = True


class LoadsRepository:
    def __init__(self, settings: LoadsSettings, *, dynamodb: Any = None, sqs: Any = None) -> None:
        self.settings = settings
        self._dynamodb = dynamodb
        self._sqs = sqs

    @property
    def dynamodb(self) -> Any:
        if self._dynamodb is None:
            self._dynamodb = aws.resource("dynamodb")
        return self._dynamodb

    @property
    def sqs(self) -> Any:
        if self._sqs is None:
            self._sqs = aws.client("sqs")
        return self._sqs

    @property
    def _loads(self) -> Any:
        return self.dynamodb.Table(self.settings.loads_table)

    def get_for_driver(self, load_id: str, driver_id: str) -> StoredLoad | None:
        """``load_id`` if it is ``driver_id``'s; None if it is not, or does not exist.

        DynamoDB checks the owner on the stored ``driver_id`` and returns nothing for
        another driver's load, as for a missing one: "not yours" does no more work than
        "does not exist" (nothing to decode, nothing to parse). The same read units as a
        GetItem, in one round trip.
        """
        items = self._loads.query(
            KeyConditionExpression=Key("load_id").eq(load_id),
            FilterExpression=Attr("driver_id").eq(driver_id),
            ConsistentRead=True,
        )["Items"]
        item = items[0] if items else None
        if item is None or item.get("driver_id") != driver_id:
            return None
        return self._stored(item)

    @staticmethod
    def _stored(item: dict[str, Any]) -> StoredLoad:
        keys = {k: int(v) for k, v in item.get("event_keys", {}).items()}
        return StoredLoad(LoadPublic.model_validate_json(item["doc"]), keys, "seen_at" in item)

    def recorded_event(self, stored: StoredLoad, key_id: str) -> LoadEventPublic | None:
        """The event ``stored`` recorded under ``key_id``, or None if it has none.

        The event row keeps the event without its load; it is answered with the load as
        stored now, which is the load right after the event unless later events followed.
        """
        seq = stored.event_keys.get(key_id)
        if seq is None:
            return None
        table = self.dynamodb.Table(self.settings.load_events_table)
        item = table.get_item(
            Key={"load_id": stored.load.load_id, "seq": seq}, ConsistentRead=True
        ).get("Item")
        if item is None or item.get("event_key") != key_id:
            # Both are written in one transaction: this is a bug or a hand edit, not a race.
            raise RuntimeError(
                f"load {stored.load.load_id} lists event key {key_id} at seq "
                f"{seq}, but that event is not stored under it"
            )
        return LoadEventPublic.model_validate({**json.loads(item["doc"]), "load": stored.load})

    def list_for_driver(self, driver_id: str) -> list[LoadPublic]:
        return [stored.load for stored in self.list_stored_for_driver(driver_id)]

    def list_stored_for_driver(self, driver_id: str) -> list[StoredLoad]:
        items = query_items(
            self._loads,
            IndexName="by_driver",
            KeyConditionExpression=Key("driver_id").eq(driver_id),
        )
        return [self._stored(i) for i in items]

    def mark_seen(self, load: LoadPublic, at: datetime) -> bool:
        """Record that ``load``'s driver read it live at ``at``: True only for the write
        that set it (a conditional update: of two reads racing, one wins), False if it was
        seen already, has taken an event since, or has another driver now."""
        try:
            self._loads.update_item(
                Key={"load_id": load.load_id},
                UpdateExpression="SET seen_at = :at",
                ConditionExpression=(
                    "attribute_exists(load_id) AND attribute_not_exists(seen_at) "
                    "AND driver_id = :driver AND version = :version"
                ),
                ExpressionAttributeValues={
                    ":at": at.isoformat(),
                    ":driver": load.driver_id,
                    ":version": load.version,
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def create(self, load: LoadPublic) -> None:
        try:
            self._loads.put_item(
                Item=self.item_of(load),
                ConditionExpression="attribute_not_exists(load_id)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise LoadExistsError(load.load_id) from None
            raise

    def save_event(
        self,
        event: LoadEventPublic,
        expected_version: int,
        *,
        key_id: str | None = None,
        event_keys: dict[str, int] | None = None,
    ) -> None:
        """Write the updated load and its event atomically, if nobody changed it meanwhile.

        With ``key_id`` (the event's idempotency key id) the load also records it in
        ``event_keys`` (``event_keys`` are the ones already on the item), and the write
        is refused if the item already has it.
        """
        keys = dict(event_keys or {})
        load_put: dict[str, Any] = {
            "TableName": self.settings.loads_table,
            "ConditionExpression": "version = :v",
            "ExpressionAttributeValues": {":v": expected_version},
        }
        event_item: dict[str, Any] = {
            "load_id": event.load_id,
            "seq": event.seq,
            "doc": event.model_dump_json(exclude={"load"}),
        }
        if key_id is not None:
            keys[key_id] = event.seq
            keys = dict(sorted(keys.items(), key=lambda kv: kv[1])[-MAX_EVENT_KEYS:])
            load_put["ConditionExpression"] += " AND attribute_not_exists(event_keys.#key)"
            load_put["ExpressionAttributeNames"] = {"#key": key_id}
            event_item["event_key"] = key_id
        load_put["Item"] = self.item_of(event.load, keys)
        client = self.dynamodb.meta.client
        try:
            client.transact_write_items(
                TransactItems=[
                    {"Put": load_put},
                    {
                        "Put": {
                            "TableName": self.settings.load_events_table,
                            "Item": event_item,
                            "ConditionExpression": "attribute_not_exists(seq)",
                        }
                    },
                ]
            )
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
    def item_of(load: LoadPublic, event_keys: dict[str, int] | None = None) -> dict[str, Any]:
        """The loads table's item for ``load``: the layout navigate and gatepass read."""
        item: dict[str, Any] = {
            "load_id": load.load_id,
            "driver_id": load.driver_id,
            "status": load.status.value,
            "version": load.version,
            "doc": load.model_dump_json(),
        }
        if event_keys:
            item["event_keys"] = event_keys
        return item
