"""Emergency levers: what an operator pulls to steer the system under stress.

A lever is one item of the stage's routing-control table (``kind = "lever"``, ``name`` =
its id, ``<type>:<target>``): who pulled it, why, when, and when it lets go by itself
(``expires_at``, epoch seconds; the table's TTL deletes it later, so readers compare
``expires_at`` with their clock themselves). The gateway (``gateway/levers/``) writes and
reads it; the notifications worker reads its ``pause:notifications`` lever. These are the
shapes both sides agree on, and the operator API's request and answer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

KIND = "lever"  # the items' ``kind`` in the routing-control table
DEFAULT_TTL_SECONDS = 15 * 60
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 4 * 3600
PAUSE_NOTIFICATIONS = "pause:notifications"


class LeverType(StrEnum):
    SHED = "shed"  # refuse a tier's traffic with a fast 503 + Retry-After
    FALLBACK = "fallback"  # serve a module (or one cell) from its fallback, never calling it
    PAUSE = "pause"  # stop a worker delivering; its messages stay queued
    EVACUATE = "evacuate"  # a region (the routing controls) or a cell (a fallback lever)


def lever_id(kind: LeverType | str, target: str) -> str:
    """``shed:deferrable``, ``fallback:loads/cell-1``, ``evacuate:region:us-east-1``."""
    return f"{LeverType(kind).value}:{target}"


class LeverPull(BaseModel):
    """An operator's request to pull a lever (``POST /ops/levers``)."""

    model_config = ConfigDict(extra="forbid")

    type: LeverType
    target: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9][a-z0-9:/_-]*$")
    reason: str = Field(min_length=1, max_length=300, description="Why: kept in the audit trail")
    ttl_seconds: int | None = Field(
        default=None,
        ge=MIN_TTL_SECONDS,
        le=MAX_TTL_SECONDS,
        description=f"Until it lets go by itself (default {DEFAULT_TTL_SECONDS} s)",
    )

    @field_validator("reason")
    @classmethod
    def _reason(cls, reason: str) -> str:
        if not reason.strip():
            raise ValueError("a lever needs a reason")
        return reason.strip()

    @property
    def lever_id(self) -> str:
        return lever_id(self.type, self.target)

    @property
    def ttl(self) -> int:
        return DEFAULT_TTL_SECONDS if self.ttl_seconds is None else self.ttl_seconds


class LeverRelease(BaseModel):
    """Why an operator lets a lever go early (``DELETE /ops/levers/{id}``)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="released", min_length=1, max_length=300)


class Lever(BaseModel):
    """One lever as the table holds it. ``expires_at`` None: it holds until released (an
    evacuated region, whose routing control never lets go by itself)."""

    model_config = ConfigDict(frozen=True)

    lever_id: str
    type: LeverType
    target: str
    who: str  # the operator's ``sub``
    why: str
    pulled_at: int  # epoch seconds
    expires_at: int | None
    revision: int = 1
    released: bool = False
    released_by: str = ""
    released_why: str = ""

    def active(self, now: float) -> bool:
        return not self.released and (self.expires_at is None or now < self.expires_at)

    def remaining(self, now: float) -> int | None:
        """Seconds until it lets go (None: never by itself)."""
        return None if self.expires_at is None else max(0, int(self.expires_at - now))

    def item(self) -> dict[str, Any]:
        """The table's item (numbers as ints: DynamoDB's resource API takes no float)."""
        item = {"kind": KIND, "name": self.lever_id} | self.model_dump(
            mode="json", exclude={"lever_id"}
        )
        if self.expires_at is None:
            item.pop("expires_at")
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lever:
        return cls(
            lever_id=item["name"],
            type=item["type"],
            target=item["target"],
            who=item.get("who", ""),
            why=item.get("why", ""),
            pulled_at=int(item.get("pulled_at", 0)),
            expires_at=int(item["expires_at"]) if "expires_at" in item else None,
            revision=int(item.get("revision", 1)),
            released=bool(item.get("released", False)),
            released_by=item.get("released_by", ""),
            released_why=item.get("released_why", ""),
        )


class LeverAudit(BaseModel):
    """One pull or release, as the audit trail keeps it (newest first)."""

    at: str  # ISO 8601, UTC
    action: str  # "pull", "release" (and for a region: "evacuate", "restore")
    lever_id: str
    who: str
    why: str
