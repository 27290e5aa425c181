"""DynamoDB and SQS access for messages. boto3 is injected; nothing connects at import time.

Messages table: one partition per driver inbox, ``driver_id`` (hash) + ``sort_key`` (range),
``doc`` (the :class:`MessagePublic` JSON). Both directions live in the driver's partition.

``sort_key`` is ``<sent_at as YYYY-MM-DDTHH:MM:SS.ffffffZ>#<message_id>``: fixed-width UTC
timestamps sort lexicographically in time order, so a Query with ``ScanIndexForward=False``
reads the inbox newest first, and the message id keeps two messages sent in the same
microsecond apart.

Message ids: a message sent with an idempotency key gets an id derived from the key (see
the service), and is stored once per id, whatever its ``sent_at``. Since the sort key
starts with the time, the message item alone cannot guard that: :meth:`MessageRepository.add`
with ``once=True`` writes, in one transaction, the message and an id item
``driver_id = "message-id#<message_id>"``, ``sort_key = "#"`` (``message_driver_id``,
``message_sort_key``: where the message is), each with ``attribute_not_exists``. An id item
lives in a partition of its own, which no driver id can name (``#`` is not allowed in
one), so no inbox query ever reads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from module_kit import aws
from shared_contracts.message import MessagePublic
from shared_contracts.notifications import Notification

from .config import MessageSettings

log = logging.getLogger("relay.message")

ID_ITEM_PREFIX = "message-id#"
ID_ITEM_SORT_KEY = "#"


def sort_key_for(sent_at: datetime, message_id: str) -> str:
    """The range key of a message: time first (for ordering), id second (for uniqueness)."""
    stamp = sent_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp}#{message_id}"


@dataclass(frozen=True)
class InboxPage:
    """One page of an inbox, and the key to resume after (``None`` on the last page)."""

    messages: list[MessagePublic]
    last_key: dict[str, str] | None


class MessageRepository:
    def __init__(self, settings: MessageSettings, *, dynamodb: Any = None, sqs: Any = None) -> None:
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
    def _messages(self) -> Any:
        return self.dynamodb.Table(self.settings.messages_table)

    def add(self, message: MessagePublic, *, once: bool = False) -> MessagePublic:
        """Store ``message`` and return the message stored under its id.

        With ``once`` a message id is stored at most once (see the module docstring): if it
        already is, nothing is written and the stored message is returned, which may differ
        from ``message`` (an earlier ``sent_at``, or another text if a key was reused).
        """
        item = {
            "driver_id": message.driver_id,
            "sort_key": sort_key_for(message.sent_at, message.message_id),
            "doc": message.model_dump_json(),
        }
        if not once:
            self._messages.put_item(Item=item)
            return message
        table = self.settings.messages_table
        try:
            self.dynamodb.meta.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": item,
                            "ConditionExpression": "attribute_not_exists(sort_key)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {
                                "driver_id": ID_ITEM_PREFIX + message.message_id,
                                "sort_key": ID_ITEM_SORT_KEY,
                                "message_driver_id": item["driver_id"],
                                "message_sort_key": item["sort_key"],
                            },
                            "ConditionExpression": "attribute_not_exists(driver_id)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise
            stored = self.get_by_id(message.message_id)
            if stored is None:  # cancelled for another reason (a conflicting transaction)
                raise
            return stored
        return message

    def get_by_id(self, message_id: str) -> MessagePublic | None:
        """The message stored with ``add(..., once=True)`` under ``message_id``, or None."""
        pointer = self._messages.get_item(
            Key={"driver_id": ID_ITEM_PREFIX + message_id, "sort_key": ID_ITEM_SORT_KEY},
            ConsistentRead=True,
        ).get("Item")
        if pointer is None:
            return None
        item = self._messages.get_item(
            Key={
                "driver_id": pointer["message_driver_id"],
                "sort_key": pointer["message_sort_key"],
            },
            ConsistentRead=True,
        ).get("Item")
        if item is None:  # both are written in one transaction: a bug, not a race
            raise RuntimeError(f"message {message_id} has an id item but no message")
        return MessagePublic.model_validate_json(item["doc"])

    def inbox_page(
        self, driver_id: str, limit: int, start_after: dict[str, str] | None = None
    ) -> InboxPage:
        """Up to ``limit`` messages of ``driver_id``'s inbox, newest first.

        One extra item is read so that the last page is known to be the last: a client
        is never handed a cursor that leads to an empty page.
        """
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "driver_id = :d",
            "ExpressionAttributeValues": {":d": driver_id},
            "ScanIndexForward": False,
            "Limit": limit + 1,
            "ConsistentRead": True,  # a message just sent shows up in the next read
        }
        if start_after is not None:
            kwargs["ExclusiveStartKey"] = start_after
        result = self._messages.query(**kwargs)
        items = result.get("Items", [])
        last_key: dict[str, str] | None = None
        if len(items) > limit:
            items = items[:limit]
            last_key = {"driver_id": items[-1]["driver_id"], "sort_key": items[-1]["sort_key"]}
        elif "LastEvaluatedKey" in result:
            # DynamoDB stopped early (1 MB page cap): resume where it stopped.
            last_key = dict(result["LastEvaluatedKey"])
        return InboxPage([MessagePublic.model_validate_json(i["doc"]) for i in items], last_key)

    def enqueue_notification(self, notification: Notification) -> bool:
        """Queue a push notification. Never fails the caller: the message is already stored."""
        try:
            self.sqs.send_message(
                QueueUrl=self.settings.notifications_queue_url,
                MessageBody=notification.model_dump_json(),
            )
            return True
        except (BotoCoreError, ClientError):
            log.exception("could not queue notification %s", notification.notification_id)
            return False
