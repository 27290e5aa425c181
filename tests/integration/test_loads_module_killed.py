"""Game day: the loads module's process is killed while drivers keep working."""

from __future__ import annotations

import json

import boto3
from boto3.dynamodb.conditions import Key

from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration.conftest import wait_until

TRIP = [("arrived", 1), ("departed", 1), ("arrived", 2)]


def test_loads_stay_readable_and_events_apply_once_in_order_after_restart(api, stack):
    driver = api.auth(Role.DRIVER, "D-1001")
    # GIVEN the driver's app has polled its loads (the gateway keeps a last-known-good copy)
    assert api.http.get("/loads", headers=driver).status_code == 200

    # WHEN the loads module dies
    stack.stop_process("loads")
    try:
        # THEN every poll still answers, from the copy, saying so
        for _ in range(10):
            r = api.http.get("/loads", headers=driver)
            assert r.status_code == 200
            marker = DegradedMarker.parse(r.headers["relay-degraded"])
            assert (marker.module, marker.fallback) == ("loads", FallbackKind.LAST_KNOWN_GOOD)
            assert [ld["load_id"] for ld in r.json()["items"]] == ["L-5001", "L-5002"]
        detail = api.http.get("/loads/L-5002", headers=driver)
        assert detail.status_code == 200 and "relay-degraded" in detail.headers
        # a driver who never polled gets their own loads from the fallback store, never
        # someone else's; one with nothing assigned gets a clear 503
        cold = api.http.get("/loads", headers=api.auth(Role.DRIVER, "D-1002"))
        assert cold.status_code == 200 and "relay-degraded" in cold.headers
        assert [ld["load_id"] for ld in cold.json()["items"]] == ["L-6001"]
        none = api.http.get("/loads", headers=api.auth(Role.DRIVER, "D-9999"))
        assert none.status_code == 503 and none.headers["retry-after"]

        # AND load events are accepted durably
        tracking = []
        for i, (kind, stop) in enumerate(TRIP):
            r = api.http.post(
                "/loads/L-5002/events",
                json={"kind": kind, "stop_seq": stop},
                headers={**driver, "idempotency-key": f"trip-L-5002-{i}"},
            )
            assert r.status_code == 202, r.text
            tracking.append(r.json()["tracking_id"])
        assert tracking == [f"trip-L-5002-{i}" for i in range(len(TRIP))]
    finally:
        # WHEN the module comes back
        stack.start_process("loads")

    # THEN the deferred events are applied, in order, exactly once
    def applied() -> bool:
        r = api.http.get("/loads/L-5002", headers=driver)
        return "relay-degraded" not in r.headers and r.json().get("version") == 1 + len(TRIP)

    assert wait_until(applied, timeout=60)
    ddb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    events = ddb.Table(stack.function_env("LoadsFunction")["LOAD_EVENTS_TABLE"]).query(
        KeyConditionExpression=Key("load_id").eq("L-5002")
    )["Items"]
    docs = [json.loads(e["doc"]) for e in sorted(events, key=lambda e: e["seq"])]
    assert [(d["kind"], d["stop_seq"]) for d in docs] == TRIP
    load = api.http.get("/loads/L-5002", headers=driver).json()
    assert (load["status"], load["current_stop"]) == ("at_stop", 2)
