"""Navigate rules: which stop the driver is heading to, and whether they will make its window.

The next stop is the load's ``current_stop`` (the loads module advances it when the driver
departs a stop). Navigate is degradable: when the facility record or the routing engine is
unavailable it still answers from what it has (the stop's own facility data, the straight-line
engine), and says which engine produced the answer. Only the load itself is indispensable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from module_kit.cells import driver_identity
from shared_contracts.errors import ConflictError, NotFoundError, UnavailableError
from shared_contracts.identity import IdentityContext
from shared_contracts.loads import LoadView, StopView
from shared_contracts.navigate import Destination, Directions

from .engine import Point, RouteEstimate, RoutingEngine, RoutingUnavailableError, StraightLineEngine
from .repository import FacilitiesRepository, LoadsReader, StorageUnavailableError

log = logging.getLogger("relay.navigate")

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def next_stop(load: LoadView) -> StopView:
    """The stop the driver is driving to (or waiting at): the one whose seq is current_stop."""
    if load.delivered:
        raise ConflictError(
            f"load {load.load_id} is delivered: there is nothing to navigate to",
            code="load-delivered",
        )
    for stop in load.stops:
        if stop.seq == load.current_stop:
            return stop
    raise ConflictError(
        f"load {load.load_id} has no stop {load.current_stop}", code="no-current-stop"
    )


class NavigateService:
    def __init__(
        self,
        facilities: FacilitiesRepository,
        loads: LoadsReader,
        *,
        engine: RoutingEngine | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.facilities = facilities
        self.loads = loads
        self.fallback_engine = StraightLineEngine()
        self.engine = engine or self.fallback_engine
        self.clock = clock

    def directions(self, driver: IdentityContext | str, load_id: str, origin: Point) -> Directions:
        """Directions to ``load_id``'s next stop for the driver ``driver`` (their identity:
        the load is read in their cell; a bare driver id is a driver of an uncelled stage)."""
        now = self.clock()
        load = self._load(driver_identity(driver), load_id)
        stop = next_stop(load)
        destination = self._destination(stop)
        route = self._estimate(origin, (destination.lat, destination.lon))
        eta_minutes = math.ceil(route.duration_minutes)
        eta = now + timedelta(minutes=eta_minutes)
        return Directions(
            load_id=load.load_id,
            stop_seq=stop.seq,
            destination=destination,
            straight_line_km=round(route.straight_line_km, 1),
            route_km=round(route.route_km, 1),
            eta_minutes=eta_minutes,
            eta=eta,
            window_start=stop.window_start,
            window_end=stop.window_end,
            on_time=eta <= stop.window_end,
            engine=route.engine,
        )

    def _load(self, identity: IdentityContext, load_id: str) -> LoadView:
        try:
            load = self.loads.get_load(load_id, identity)
        except StorageUnavailableError:
            log.exception("loads table unavailable")
            raise UnavailableError("loads cannot be read right now; retry shortly") from None
        if load is None:
            # Same answer, and the same work, for "not yours" and "does not exist" (the
            # reader checks the owner before parsing the load): ids cannot be probed.
            raise NotFoundError(f"load {load_id} not found")
        return load

    def _destination(self, stop: StopView) -> Destination:
        """The facility record if there is one, else the stop's own data without instructions."""
        facility = stop.facility
        try:
            found = self.facilities.get(facility.facility_id)
        except (StorageUnavailableError, ValidationError):
            log.exception("facility %s unreadable; using the stop's own data", facility.facility_id)
            found = None
        return found or Destination(
            facility_id=facility.facility_id,
            name=facility.name,
            address=facility.address,
            lat=facility.lat,
            lon=facility.lon,
        )

    def _estimate(self, origin: Point, destination: Point) -> RouteEstimate:
        try:
            return self.engine.estimate(origin, destination)
        except RoutingUnavailableError:
            log.exception("routing engine failed; falling back to %s", self.fallback_engine.name)
            return self.fallback_engine.estimate(origin, destination)
