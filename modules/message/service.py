"""Message rules: a driver's inbox holds both directions, newest first, and only theirs.

Storing the message is the commitment; the push notification that follows is best effort
(a failed enqueue is logged, the sender still gets 201 and the message is in the inbox).

``sent_at`` is when the gateway accepted the message (``x-relay-accepted-at``, checked by
:func:`accepted_time`; this module's clock without it), so a message deferred while this
module was down keeps its place in the conversation instead of jumping ahead of the
messages sent after it.

Exactly once: a message sent with an idempotency key has an id derived from the sender,
its direction and the key (:func:`message_id_for`), and is stored once per id. A second
application (Powertools' lease expired while the first delivery was stuck, or the first's
write landed after it gave up) answers the stored message and queues its push again: the
push's ``notification_id`` is the message id, and push subscribers de-duplicate on it, so
a push lost with the first delivery is sent and a push already sent is not shown twice.

Metrics (:mod:`module_kit.metrics`): each push queued counts
``relay_notifications_enqueued_total`` (a re-queued push counts again, as it is delivered
again).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from module_kit import metrics
from module_kit.idempotency import accepted_time, derived_id
from shared_contracts.errors import IdempotencyKeyReusedError, ValidationFailedError
from shared_contracts.message import (
    Direction,
    DispatchMessageCreate,
    MessageCreate,
    MessagePage,
    MessagePublic,
)
from shared_contracts.notifications import Notification, NotificationKind

from .cursor import decode_cursor, encode_cursor
from .repository import MessageRepository

Clock = Callable[[], datetime]

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 50
PREVIEW_CHARS = 140  # push bodies are a preview; the app opens the inbox for the rest


def utcnow() -> datetime:
    return datetime.now(UTC)


def preview(text: str, limit: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def message_id_for(sender: str, direction: Direction, idempotency_key: str) -> str:
    """The id of a keyed message: the same for every application of the same key."""
    return derived_id("message", direction.value, sender, idempotency_key)


class MessageService:
    def __init__(
        self,
        repository: MessageRepository,
        clock: Clock = utcnow,
        *,
        metrics_writer: metrics.ModuleMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.clock = clock
        self.metrics = metrics_writer or metrics.ModuleMetrics("message")

    def send_to_dispatch(
        self,
        driver_id: str,
        command: MessageCreate,
        *,
        idempotency_key: str | None = None,
        accepted_at: datetime | None = None,
    ) -> MessagePublic:
        """A driver writes to dispatch; the message lands in the driver's own inbox."""
        message = self._store(
            driver_id,
            Direction.TO_DISPATCH,
            command,
            sender=driver_id,
            idempotency_key=idempotency_key,
            accepted_at=accepted_at,
        )
        self._notify(
            message, NotificationKind.MESSAGE_TO_DISPATCH, title=f"Message from driver {driver_id}"
        )
        return message

    def send_to_driver(
        self,
        command: DispatchMessageCreate,
        *,
        sender: str | None = None,
        idempotency_key: str | None = None,
        accepted_at: datetime | None = None,
    ) -> MessagePublic:
        """Dispatch writes to a driver; the message lands in that driver's inbox.

        ``sender`` (the dispatcher's identity) scopes ``idempotency_key``; it is required
        with a key, so that two dispatchers' keys never name the same message.
        """
        if idempotency_key is not None and not sender:
            raise ValueError("a keyed dispatch message needs its sender")
        message = self._store(
            command.driver_id,
            Direction.TO_DRIVER,
            command,
            sender=sender or "",
            idempotency_key=idempotency_key,
            accepted_at=accepted_at,
        )
        self._notify(message, NotificationKind.MESSAGE_TO_DRIVER, title="Message from dispatch")
        return message

    def inbox(
        self, driver_id: str, limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None
    ) -> MessagePage:
        """One page of ``driver_id``'s inbox, newest first.

        A cursor only resumes its owner's inbox."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationFailedError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        start_after = decode_cursor(cursor, driver_id) if cursor is not None else None
        page = self.repository.inbox_page(driver_id, limit, start_after)
        next_cursor = encode_cursor(page.last_key) if page.last_key else None
        return MessagePage(items=page.messages, next_cursor=next_cursor)

    def _store(
        self,
        driver_id: str,
        direction: Direction,
        command: MessageCreate,
        *,
        sender: str,
        idempotency_key: str | None,
        accepted_at: datetime | None,
    ) -> MessagePublic:
        sent_at = accepted_time(accepted_at, self.clock().astimezone(UTC))  # UTC either way
        if idempotency_key is None:
            message_id = uuid.uuid4().hex
        else:
            message_id = message_id_for(sender, direction, idempotency_key)
        message = MessagePublic(
            message_id=message_id,
            driver_id=driver_id,
            direction=direction,
            body=command.body,
            load_id=command.load_id,
            sent_at=sent_at,
        )
        if idempotency_key is None:
            return self.repository.add(message)
        stored = self.repository.add(message, once=True)
        if (stored.driver_id, stored.direction, stored.body, stored.load_id) != (
            message.driver_id,
            message.direction,
            message.body,
            message.load_id,
        ):
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different message; "
                "use a new key for a new request"
            )
        return stored

    def _notify(self, message: MessagePublic, kind: NotificationKind, *, title: str) -> None:
        data = {"message_id": message.message_id}
        if message.load_id:
            data["load_id"] = message.load_id
        enqueued = self.repository.enqueue_notification(
            Notification(
                # One push per message: subscribers de-duplicate on notification_id.
                notification_id=message.message_id,
                kind=kind,
                driver_id=message.driver_id,
                title=title,
                body=preview(message.body),
                data=data,
            )
        )
        if enqueued:
            self.metrics.count(metrics.NOTIFICATIONS_ENQUEUED)
