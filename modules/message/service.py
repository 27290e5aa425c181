"""Message rules: a driver's inbox holds both directions, newest first, and only theirs.

Storing the message is the commitment; the push notification that follows is best effort
(a failed enqueue is logged, the sender still gets 201 and the message is in the inbox).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from shared_contracts.errors import ValidationFailedError
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


class MessageService:
    def __init__(self, repository: MessageRepository, clock: Clock = utcnow) -> None:
        self.repository = repository
        self.clock = clock

    def send_to_dispatch(self, driver_id: str, command: MessageCreate) -> MessagePublic:
        """A driver writes to dispatch; the message lands in the driver's own inbox."""
        message = self._store(driver_id, Direction.TO_DISPATCH, command)
        self._notify(message, NotificationKind.MESSAGE_TO_DISPATCH,
                     title=f"Message from driver {driver_id}")
        return message

    def send_to_driver(self, command: DispatchMessageCreate) -> MessagePublic:
        """Dispatch writes to a driver; the message lands in that driver's inbox."""
        message = self._store(command.driver_id, Direction.TO_DRIVER, command)
        self._notify(message, NotificationKind.MESSAGE_TO_DRIVER, title="Message from dispatch")
        return message

    def inbox(self, driver_id: str, limit: int = DEFAULT_PAGE_SIZE,
              cursor: str | None = None) -> MessagePage:
        """One page of ``driver_id``'s inbox, newest first. A cursor only resumes its owner's inbox."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationFailedError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        start_after = decode_cursor(cursor, driver_id) if cursor is not None else None
        page = self.repository.inbox_page(driver_id, limit, start_after)
        next_cursor = encode_cursor(page.last_key) if page.last_key else None
        return MessagePage(items=page.messages, next_cursor=next_cursor)

    def _store(self, driver_id: str, direction: Direction, command: MessageCreate) -> MessagePublic:
        message = MessagePublic(
            message_id=uuid.uuid4().hex, driver_id=driver_id, direction=direction,
            body=command.body, load_id=command.load_id,
            sent_at=self.clock().astimezone(UTC),
        )
        self.repository.add(message)
        return message

    def _notify(self, message: MessagePublic, kind: NotificationKind, *, title: str) -> None:
        data = {"message_id": message.message_id}
        if message.load_id:
            data["load_id"] = message.load_id
        self.repository.enqueue_notification(Notification(
            notification_id=uuid.uuid4().hex, kind=kind, driver_id=message.driver_id,
            title=title, body=preview(message.body), data=data,
        ))
