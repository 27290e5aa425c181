"""The modules' metrics on the local stack: EMF lines in each process's log, read by relay.emf.

Module processes run under uvicorn, not Lambda: the lines must still reach
``.relay/logs/<process>.log`` as each event happens, and relay.emf must add them up as
CloudWatch would.
"""

from __future__ import annotations

from datetime import UTC, datetime

from module_kit import metrics
from relay import demo
from relay.emf import EmfReader
from shared_contracts.identity import Role
from tests.integration.conftest import wait_until


def test_a_load_assigned_seen_and_reported_shows_in_the_emf_totals(api, stack):
    reader = EmfReader(stack.state_dir / "logs")
    before = reader.poll()["totals"]

    def grew(name: str) -> float:
        return reader.poll()["totals"].get(name, 0.0) - before.get(name, 0.0)

    # GIVEN a load assigned to D-1901, WHEN the driver lists it and reports arriving
    command = demo.assignment("L-8101", "D-1901", ["F-DET", "F-CMH"], datetime.now(UTC))
    dispatch = api.auth(Role.DISPATCH, None)
    driver = api.auth(Role.DRIVER, "D-1901")
    r = api.http.post(
        "/dispatch/assignments", json=command.model_dump(mode="json"), headers=dispatch
    )
    assert r.status_code == 201, r.text
    assert api.http.get("/loads", headers=driver).status_code == 200
    assert api.http.get("/loads", headers=driver).status_code == 200  # seen once only
    arrived = {"kind": "arrived", "stop_seq": 1}
    assert api.http.post("/loads/L-8101/events", json=arrived, headers=driver).status_code == 201
    # THEN the modules' and the worker's lines add up in relay.emf
    expected = {
        metrics.ASSIGNMENTS_CREATED: 1,
        metrics.ASSIGNMENTS_SEEN: 1,
        metrics.EVENTS_ACCEPTED: 1,
        metrics.EVENTS_APPLIED: 1,
        metrics.NOTIFICATIONS_ENQUEUED: 1,
        metrics.NOTIFICATIONS_DELIVERED: 1,
    }
    wait_until(lambda: all(grew(name) >= n for name, n in expected.items()), timeout=20)
    assert {name: grew(name) for name in expected} == expected
    # AND every answer of the modules is counted, and the seen delay observed
    assert grew(metrics.REQUESTS) >= 4
    assert grew(metrics.ASSIGNMENT_SEEN_DELAY) == 1
