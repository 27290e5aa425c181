"""Loads: a driver's load assignments and the events they report."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from ._base import (
    Contract,
    DriverId,
    FacilityId,
    Latitude,
    LoadId,
    Longitude,
    Published,
    ShortText,
    Timestamp,
)


class StopKind(StrEnum):
    PICKUP = "pickup"
    DELIVERY = "delivery"


class LoadStatus(StrEnum):
    ASSIGNED = "assigned"  # given to the driver, not started
    AT_STOP = "at_stop"  # arrived at ``current_stop``
    IN_TRANSIT = "in_transit"  # departed a stop, heading to ``current_stop``
    DELIVERED = "delivered"  # terminal


class LoadEventKind(StrEnum):
    ARRIVED = "arrived"
    DEPARTED = "departed"
    DELIVERED = "delivered"


class Facility(Contract):
    facility_id: FacilityId
    name: ShortText
    address: ShortText
    lat: Latitude
    lon: Longitude


class StopPlan(Contract):
    """A stop as dispatch plans it."""

    kind: StopKind
    facility: Facility
    window_start: Timestamp
    window_end: Timestamp

    @model_validator(mode="after")
    def _window(self) -> StopPlan:
        if self.window_end <= self.window_start:
            raise ValueError("window_end must be after window_start")
        return self


class FacilityPublic(Published):
    """A facility as a load shows it."""

    facility_id: FacilityId
    name: str
    address: str
    lat: Latitude
    lon: Longitude


class Stop(Published):
    """A stop of an assigned load: the plan, numbered, with the driver's progress."""

    seq: int = Field(ge=1)
    kind: StopKind
    facility: FacilityPublic
    window_start: datetime
    window_end: datetime
    arrived_at: datetime | None = None
    departed_at: datetime | None = None


class LoadAssign(Contract):
    """Dispatch assigns a load to a driver (``POST /dispatch/assignments``)."""

    load_id: LoadId
    driver_id: DriverId
    reference: ShortText | None = None
    trailer: Annotated[str, StringConstraints(min_length=1, max_length=20)] | None = None
    commodity: ShortText | None = None
    stops: list[StopPlan] = Field(min_length=2, max_length=20)

    @model_validator(mode="after")
    def _shape(self) -> LoadAssign:
        if self.stops[0].kind is not StopKind.PICKUP:
            raise ValueError("the first stop must be a pickup")
        if self.stops[-1].kind is not StopKind.DELIVERY:
            raise ValueError("the last stop must be a delivery")
        return self


class LoadPublic(Published):
    load_id: LoadId
    driver_id: DriverId
    status: LoadStatus
    reference: str | None = None
    trailer: str | None = None
    commodity: str | None = None
    shipper: FacilityPublic
    consignee: FacilityPublic
    stops: list[Stop]
    current_stop: int = Field(ge=1, description="Seq of the stop being visited or driven to")
    version: int = Field(ge=1)
    assigned_at: datetime
    updated_at: datetime


class LoadList(Published):
    items: list[LoadPublic]


class LoadEventCreate(Contract):
    kind: LoadEventKind
    stop_seq: int = Field(ge=1, le=20)
    occurred_at: Timestamp | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None
    note: Annotated[str, StringConstraints(max_length=500)] | None = None


class LoadEventPublic(Published):
    load_id: LoadId
    seq: int = Field(ge=1, description="Position of this event in the load's history")
    kind: LoadEventKind
    stop_seq: int
    occurred_at: datetime
    recorded_at: datetime
    load: LoadPublic


# --- What other components read of a load --------------------------------------------------
# Tolerant readers (docs/contracts.md): navigate and gatepass read loads' records, the gateway
# keeps and serves loads' answers. Each reads a load through this view: only the fields they
# use are required, the status is any string (a status added by loads is not a reason to
# refuse the load), and unknown fields are kept (a copy the gateway serves carries them).


class FacilityView(Published):
    facility_id: str
    name: str
    address: str
    lat: float
    lon: float


class StopView(Published):
    seq: int
    facility: FacilityView
    window_start: datetime
    window_end: datetime


class LoadView(Published):
    """A load as navigate, gatepass and the gateway's fallbacks read it."""

    load_id: str
    driver_id: str
    status: str
    current_stop: int
    stops: list[StopView] = Field(min_length=1)

    @property
    def delivered(self) -> bool:
        return self.status == LoadStatus.DELIVERED


class LoadListView(Published):
    items: list[LoadView]
