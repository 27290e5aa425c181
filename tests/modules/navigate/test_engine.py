"""Routing engine maths: great-circle distance, road factor, truck speed."""

from __future__ import annotations

import pytest

from modules.navigate.engine import (
    DEFAULT_ROAD_FACTOR,
    DEFAULT_TRUCK_SPEED_KMH,
    StraightLineEngine,
    haversine_km,
)

CHICAGO = (41.8781, -87.6298)
INDIANAPOLIS = (39.7684, -86.1581)


def test_haversine_matches_a_known_distance():
    # Chicago to Indianapolis city centres: about 265 km as the crow flies.
    assert haversine_km(CHICAGO, INDIANAPOLIS) == pytest.approx(265, rel=0.01)


def test_haversine_is_symmetric_and_zero_on_the_spot():
    assert haversine_km(CHICAGO, INDIANAPOLIS) == pytest.approx(haversine_km(INDIANAPOLIS, CHICAGO))
    assert haversine_km(CHICAGO, CHICAGO) == 0


def test_haversine_handles_antipodes_and_the_date_line():
    # Half the Earth's circumference, without a math domain error from rounding.
    assert haversine_km((0, 0), (0, 180)) == pytest.approx(20015, rel=0.001)
    # 1 degree of longitude across the date line at the equator is ~111 km, not ~39,900.
    assert haversine_km((0, 179.5), (0, -179.5)) == pytest.approx(111.2, rel=0.01)


def test_default_engine_stretches_distance_and_drives_at_truck_speed():
    # GIVEN the default engine
    engine = StraightLineEngine()
    # WHEN it estimates Chicago to Indianapolis
    est = engine.estimate(CHICAGO, INDIANAPOLIS)
    # THEN road distance is the straight line times the road factor, driven at truck speed
    straight = haversine_km(CHICAGO, INDIANAPOLIS)
    assert est.straight_line_km == pytest.approx(straight)
    assert est.route_km == pytest.approx(straight * DEFAULT_ROAD_FACTOR)
    assert est.duration_minutes == pytest.approx(est.route_km / DEFAULT_TRUCK_SPEED_KMH * 60)
    assert est.engine == "straight-line"
    assert (DEFAULT_ROAD_FACTOR, DEFAULT_TRUCK_SPEED_KMH) == (1.3, 75)


def test_engine_parameters_change_the_estimate():
    # At 60 km/h with no detour, minutes equal kilometres.
    est = StraightLineEngine(road_factor=1.0, speed_kmh=60).estimate(CHICAGO, INDIANAPOLIS)
    assert est.route_km == pytest.approx(est.straight_line_km)
    assert est.duration_minutes == pytest.approx(est.route_km)


@pytest.mark.parametrize("kwargs", [{"road_factor": 0.9}, {"speed_kmh": 0}, {"speed_kmh": -5}])
def test_impossible_engine_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        StraightLineEngine(**kwargs)
