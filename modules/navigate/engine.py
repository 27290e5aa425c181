"""Routing engines: how far and how long from the driver to a stop.

The service only knows the :class:`RoutingEngine` protocol, so a real road-network engine
(a routing API, a self-hosted OSRM) plugs in later by passing it to ``create_app(engine=...)``.
The default :class:`StraightLineEngine` needs no network: great-circle distance stretched by a
road factor, driven at an average truck speed. Good enough for an ETA against a two-hour
appointment window; not for turn-by-turn guidance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG)."""

DEFAULT_ROAD_FACTOR = 1.3
"""Road distance / straight-line distance. Typical for US interstate freight corridors."""

DEFAULT_TRUCK_SPEED_KMH = 75.0
"""Average loaded-truck speed door to door: highway at ~100 km/h, less urban stretches."""

Point = tuple[float, float]
"""(latitude, longitude) in degrees."""


class RoutingUnavailableError(Exception):
    """An engine raises this when it cannot answer (timeout, quota); the service falls back."""


@dataclass(frozen=True)
class RouteEstimate:
    straight_line_km: float
    route_km: float
    duration_minutes: float
    engine: str


class RoutingEngine(Protocol):
    """Anything that can estimate a drive between two points."""

    def estimate(self, origin: Point, destination: Point) -> RouteEstimate:
        """Distance and drive time; raises RoutingUnavailableError when it cannot answer."""
        ...


def haversine_km(origin: Point, destination: Point) -> float:
    """Great-circle distance between two (lat, lon) points, in kilometres."""
    lat1, lon1 = map(math.radians, origin)
    lat2, lon2 = map(math.radians, destination)
    a = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


class StraightLineEngine:
    """Great-circle distance x road factor, at a constant average speed."""

    name = "straight-line"

    def __init__(
        self, road_factor: float = DEFAULT_ROAD_FACTOR, speed_kmh: float = DEFAULT_TRUCK_SPEED_KMH
    ) -> None:
        if road_factor < 1:
            raise ValueError("road_factor must be >= 1: no road beats the straight line")
        if speed_kmh <= 0:
            raise ValueError("speed_kmh must be positive")
        self.road_factor = road_factor
        self.speed_kmh = speed_kmh

    def estimate(self, origin: Point, destination: Point) -> RouteEstimate:
        straight = haversine_km(origin, destination)
        route = straight * self.road_factor
        return RouteEstimate(
            straight_line_km=straight,
            route_km=route,
            duration_minutes=route / self.speed_kmh * 60,
            engine=self.name,
        )
