"""Game day: one driver's deferred writes fail for a while, then apply in order, each once.

The writes go through the real gateway into the real deferred-writes queue (SQS FIFO, one
message group per driver) while the loads module is down, and the real replay runner
(relay.eventsource, FIFO group semantics) fails them several times before loads comes
back. A runner that backs off each message of a group on its own, or passes on the
emulator's out-of-order redeliveries, applies a later event before an earlier one, and
the loads module refuses the now-impossible transition for good.
"""

from __future__ import annotations

import json

import boto3
from boto3.dynamodb.conditions import Key

from shared_contracts.identity import Role
from tests.integration.conftest import wait_until

TRIP = [("arrived", 1), ("departed", 1), ("arrived", 2)]
FAILED_DELIVERIES = 3  # the replay runner must have failed the group at least this often


def failed_batches(log_text: str) -> int:
    """Batches the runner logged as (partly) failed."""
    return sum(1 for line in log_text.splitlines() if " failed (retry in " in line)


def test_a_drivers_deferred_events_apply_in_order_after_repeated_failures(api, stack):
    driver = api.auth(Role.DRIVER, "D-1001")
    queue_url = stack.function_env("GatewayFunction")["RELAY_DEFERRED_QUEUE_URL"]
    replay_log = stack.processes["replay"].log_path

    # GIVEN the replay runner and the loads module are down, and the driver's three events
    # are accepted into the deferred queue (so the runner sees them all at once)
    stack.stop_process("replay")
    stack.stop_process("loads")
    try:
        for i, (kind, stop) in enumerate(TRIP):
            r = api.http.post(
                "/loads/L-5002/events",
                json={"kind": kind, "stop_seq": stop},
                headers={**driver, "idempotency-key": f"fifo-L-5002-{i}"},
            )
            assert r.status_code == 202, r.text
        assert api.queue_depth(queue_url) == len(TRIP)

        # WHEN the runner delivers them while loads is still down, failing several times
        log_start = len(replay_log.read_text()) if replay_log.exists() else 0
        stack.start_process("replay")
        assert wait_until(
            lambda: failed_batches(replay_log.read_text()[log_start:]) >= FAILED_DELIVERIES,
            timeout=30,
        )
    finally:
        # AND loads comes back
        stack.start_process("loads")

    # THEN the queue drains, and the events were applied exactly once, in the driver's order
    assert wait_until(lambda: api.queue_depth(queue_url) == 0, timeout=30)
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
    assert "refused by loads for good" not in replay_log.read_text()[log_start:]

    def live_state() -> tuple[str, int] | None:
        r = api.http.get("/loads/L-5002", headers=driver)
        if r.status_code != 200 or "relay-degraded" in r.headers:
            return None  # the gateway's breaker may still be finding out loads is back
        return r.json()["status"], r.json()["current_stop"]

    assert wait_until(lambda: live_state() is not None, timeout=20)
    assert live_state() == ("at_stop", 2)
