"""Navigation to the next stop of a load."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ._base import FacilityId, Latitude, LoadId, Longitude, Published


class DockHours(Published):
    opens: str = Field(pattern=r"^\d{2}:\d{2}$")
    closes: str = Field(pattern=r"^\d{2}:\d{2}$")
    days: str = Field(description="e.g. Mon-Fri")


class Destination(Published):
    facility_id: FacilityId
    name: str
    address: str
    lat: Latitude
    lon: Longitude
    entry_instructions: str | None = None
    dock_hours: DockHours | None = None


class Directions(Published):
    load_id: LoadId
    stop_seq: int
    destination: Destination
    straight_line_km: float = Field(ge=0)
    route_km: float = Field(ge=0, description="Estimated road distance")
    eta_minutes: int = Field(ge=0)
    eta: datetime
    window_start: datetime
    window_end: datetime
    on_time: bool
    engine: str = Field(description="Which routing engine produced this answer")
