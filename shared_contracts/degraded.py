"""The degraded marker: how a response says a fallback served it.

Every response a fallback produced carries the ``Relay-Degraded`` header, e.g.::

    Relay-Degraded: module=loads; fallback=last-known-good; age=183

``age`` (seconds since the copy was fresh) is present for stale copies. Apps show
"cached 3 min ago" from it; a response without the header is live.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .headers import DEGRADED

HEADER = DEGRADED


class FallbackKind(StrEnum):
    LAST_KNOWN_GOOD = "last-known-good"  # a cached copy of an earlier live answer
    DEFERRED = "deferred"  # a write accepted into a durable queue (202)
    STATIC = "static"  # an answer built from what the gateway knows


class DegradedMarker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    module: str
    fallback: FallbackKind
    age: int | None = Field(default=None, ge=0, description="Seconds since the copy was live")

    def header_value(self) -> str:
        value = f"module={self.module}; fallback={self.fallback.value}"
        return value if self.age is None else f"{value}; age={self.age}"

    @classmethod
    def parse(cls, value: str) -> DegradedMarker:
        parts = dict(p.strip().split("=", 1) for p in value.split(";") if "=" in p)
        return cls(
            module=parts["module"],
            fallback=FallbackKind(parts["fallback"]),
            age=int(parts["age"]) if "age" in parts else None,
        )


class DeferredAccepted(BaseModel):
    """Body of a 202 for a write accepted while its module was unavailable."""

    model_config = ConfigDict(extra="forbid")

    status: str = "accepted"
    tracking_id: str = Field(description="The idempotency key the write will be applied with")
    module: str
    status_url: str = Field(
        description="GET it for the write's state: pending, applied or "
        "refused with the module's reason"
    )
    detail: str = "the service is unavailable; this write is queued and will be applied in order"


class DeferredState(StrEnum):
    PENDING = "pending"  # queued; applied in order when its module is back
    APPLIED = "applied"  # the module applied it (or had applied it already)
    REFUSED = "refused"  # the module refused it for good; ``problem`` says why


class DeferredRefusal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: int = Field(description="The module's HTTP status")
    code: str | None = Field(
        default=None, description="The module's problem code, e.g. invalid-transition"
    )
    detail: str | None = None


class DeferredWriteStatus(BaseModel):
    """``GET /deferred/{tracking_id}``: what became of a write accepted with 202."""

    model_config = ConfigDict(extra="forbid")

    tracking_id: str
    module: str
    method: str
    path: str
    state: DeferredState
    accepted_at: datetime = Field(description="When the gateway accepted the write")
    decided_at: datetime | None = Field(default=None, description="When it was applied or refused")
    refusal: DeferredRefusal | None = None
