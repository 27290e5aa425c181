"""Base model and bounded field types shared by every contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


class Contract(BaseModel):
    """What a client sends, validated at the edge: unknown fields are refused (422), strings
    are trimmed. A field the module does not know would otherwise be dropped from a write
    the client was told was accepted (docs/contracts.md, "What is strict")."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Published(BaseModel):
    """What one component produces and others read: module answers, table records, stream
    images, queue messages. Read tolerantly: unknown fields are kept and passed along (a
    copy served from a fallback still carries a field its module added), never refused; a
    reader requires only the fields it uses (docs/contracts.md, "What is tolerant")."""

    model_config = ConfigDict(extra="allow")


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

DriverId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
LoadId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
FacilityId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
PassId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
LongText = Annotated[str, StringConstraints(min_length=1, max_length=2000)]

Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone, e.g. 2026-11-22T08:00:00Z")
    return value


Timestamp = Annotated[datetime, AfterValidator(_aware)]
