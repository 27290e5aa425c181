"""Push notification requests, carried on the notifications queue."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import DriverId, Published


class NotificationKind(StrEnum):
    LOAD_ASSIGNED = "load_assigned"
    MESSAGE_TO_DRIVER = "message_to_driver"
    MESSAGE_TO_DISPATCH = "message_to_dispatch"


class Notification(Published):
    notification_id: Annotated[str, StringConstraints(min_length=8, max_length=64)]
    kind: NotificationKind
    driver_id: DriverId
    title: Annotated[str, StringConstraints(max_length=120)]
    body: Annotated[str, StringConstraints(max_length=500)]
    data: dict[str, str] = Field(default_factory=dict)
