"""Demo data: drivers, facilities and loads the local stack is seeded with.

Times are relative to "now" so that seeded appointment windows are always current.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared_contracts.loads import Facility, LoadAssign, StopKind, StopPlan
from shared_contracts.navigate import Destination, DockHours

DRIVERS = ["D-1001", "D-1002", "D-1003"]

# One facility per cell-to-be: cells partition by facility.
FACILITIES: list[dict] = [
    {
        "facility_id": "F-CHI",
        "cell": "cell-1",
        "name": "Chicago Cross-Dock",
        "address": "4200 S Pulaski Rd, Chicago, IL",
        "lat": 41.8155,
        "lon": -87.7245,
        "entry_instructions": "Enter from Pulaski gate 3; show pass at the guard shack.",
        "dock_hours": {"opens": "05:00", "closes": "22:00", "days": "Mon-Sat"},
    },
    {
        "facility_id": "F-IND",
        "cell": "cell-2",
        "name": "Indianapolis DC",
        "address": "2700 S Holt Rd, Indianapolis, IN",
        "lat": 39.7322,
        "lon": -86.2236,
        "entry_instructions": "Truck entrance on Holt Rd south; scan pass at kiosk.",
        "dock_hours": {"opens": "00:00", "closes": "23:59", "days": "Mon-Sun"},
    },
    {
        "facility_id": "F-CMH",
        "cell": "cell-3",
        "name": "Columbus Warehouse",
        "address": "1800 Westbelt Dr, Columbus, OH",
        "lat": 39.9961,
        "lon": -83.1190,
        "entry_instructions": "Use the north gate; doors 10-24 for inbound.",
        "dock_hours": {"opens": "06:00", "closes": "20:00", "days": "Mon-Fri"},
    },
    {
        "facility_id": "F-DET",
        "cell": "cell-4",
        "name": "Detroit Yard",
        "address": "9500 Freeland St, Detroit, MI",
        "lat": 42.3624,
        "lon": -83.1781,
        "entry_instructions": "Check in at the gatehouse; trailers drop in row C.",
        "dock_hours": {"opens": "04:00", "closes": "20:00", "days": "Mon-Fri"},
    },
]
_BY_ID = {f["facility_id"]: f for f in FACILITIES}


def facility(facility_id: str) -> Facility:
    f = _BY_ID[facility_id]
    return Facility(
        facility_id=facility_id, name=f["name"], address=f["address"], lat=f["lat"], lon=f["lon"]
    )


def destination(facility_id: str) -> Destination:
    f = _BY_ID[facility_id]
    return Destination(
        facility_id=facility_id,
        name=f["name"],
        address=f["address"],
        lat=f["lat"],
        lon=f["lon"],
        entry_instructions=f["entry_instructions"],
        dock_hours=DockHours(**f["dock_hours"]),
    )


def assignment(
    load_id: str,
    driver_id: str,
    route: list[str],
    now: datetime,
    first_window_in: timedelta = timedelta(hours=1),
) -> LoadAssign:
    """A load over ``route`` (facility ids): pickup first, deliveries after, 4 h apart."""
    stops = []
    for i, fid in enumerate(route):
        start = now + first_window_in + timedelta(hours=4 * i)
        stops.append(
            StopPlan(
                kind=StopKind.PICKUP if i == 0 else StopKind.DELIVERY,
                facility=facility(fid),
                window_start=start,
                window_end=start + timedelta(hours=2),
            )
        )
    return LoadAssign(
        load_id=load_id,
        driver_id=driver_id,
        reference=f"PO-{load_id[2:]}",
        trailer="TRL-53-0042",
        commodity="Palletized dry goods",
        stops=stops,
    )


def loads(now: datetime) -> list[LoadAssign]:
    return [
        assignment("L-5001", "D-1001", ["F-CHI", "F-IND"], now),
        assignment("L-5002", "D-1001", ["F-IND", "F-CMH", "F-DET"], now, timedelta(hours=10)),
        assignment("L-6001", "D-1002", ["F-DET", "F-CHI"], now),
        assignment("L-7001", "D-1003", ["F-CMH", "F-IND"], now),
    ]
