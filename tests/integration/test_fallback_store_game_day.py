"""Game day: loads is down and the gateway was just restarted (a cold instance, as a new
Lambda execution environment is): a driver who never called still gets their loads, from
the fallback store the projector keeps current from the loads table's stream."""

from __future__ import annotations

import time

import boto3

from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration.conftest import wait_until


def test_a_driver_who_never_called_gets_their_loads_from_a_fresh_gateway_with_loads_down(
    api, stack
):
    ddb = boto3.resource(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    store = ddb.Table(stack.function_env("GatewayFunction")["RELAY_FALLBACK_STORE_TABLE"])
    key = {"pk": "driver#D-1002", "sk": "load#L-6001"}  # seeded; D-1002 has never called

    # GIVEN the seeded assignment projected from the loads table's stream (local runner)
    assert wait_until(lambda: "Item" in store.get_item(Key=key), timeout=30)
    projected_at = float(store.get_item(Key=key)["Item"]["projected_at"])

    # WHEN loads is stopped and the gateway process restarted (it remembers nothing)
    stack.stop_process("loads")
    try:
        stack.restart_process("gateway")
        r = api.http.get("/loads", headers=api.auth(Role.DRIVER, "D-1002"))
        asked_at = time.time()

        # THEN the driver gets their load, marked degraded, with the stored copy's age
        assert r.status_code == 200, r.text
        assert [ld["load_id"] for ld in r.json()["items"]] == ["L-6001"]
        marker = DegradedMarker.parse(r.headers["relay-degraded"])
        assert (marker.module, marker.fallback) == ("loads", FallbackKind.LAST_KNOWN_GOOD)
        assert marker.age is not None
        assert abs(marker.age - (asked_at - projected_at)) <= 2
        detail = api.http.get("/loads/L-6001", headers=api.auth(Role.DRIVER, "D-1002"))
        assert detail.status_code == 200 and "relay-degraded" in detail.headers
        # and a driver with nothing assigned still gets a clear 503, never another's loads
        nobody = api.http.get("/loads", headers=api.auth(Role.DRIVER, "D-9999"))
        assert nobody.status_code == 503 and nobody.headers["retry-after"]
    finally:
        stack.start_process("loads")
