"""Messages between a driver and dispatch."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from ._base import Contract, DriverId, LoadId, LongText, MessageId, Published


class Direction(StrEnum):
    TO_DISPATCH = "to_dispatch"
    TO_DRIVER = "to_driver"


class MessageCreate(Contract):
    """A driver writes to dispatch (``POST /message``)."""

    body: LongText
    load_id: LoadId | None = None


class DispatchMessageCreate(MessageCreate):
    """Dispatch writes to a driver (``POST /dispatch/messages``)."""

    driver_id: DriverId


class MessagePublic(Published):
    message_id: MessageId
    driver_id: DriverId
    direction: Direction
    body: str
    load_id: LoadId | None = None
    sent_at: datetime


class MessagePage(Published):
    items: list[MessagePublic]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page")
