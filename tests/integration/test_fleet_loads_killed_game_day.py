"""Fleet game day: the loads module killed, then every gateway process restarted cold.

4 gateway processes behind nginx (`relay dev --gateways 4`); loads stopped through the
supervisor (`relay stop loads`); every gateway restarted one by one (`relay restart
gateway-N`), so no instance remembers anything. Then every seeded driver with an
assignment - those who never called before the outage too - gets their loads, degraded,
from each instance (on its own port) and through the balancer; their load events, posted
through the balancer and so spread over the instances, answer 202 (a 503 retried with
the same key, as the app does); and once loads is
started again and the queue drains, every event is applied exactly once, in order, and
each 202's status_url reads `applied`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import httpx
from boto3.dynamodb.conditions import Key

from relay import demo
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration import test_gateway_fleet as fleet
from tests.integration.conftest import wait_until
from tests.integration.test_deferred_game_days import events_of

pytestmark = fleet.pytestmark
stack = fleet.stack  # the 4-gateway fleet behind nginx, supervised

# Every seeded driver with an assignment, and their loads (relay/demo.py).
ASSIGNED: dict[str, list[str]] = {}
for _load in demo.loads(datetime.now(UTC)):
    ASSIGNED.setdefault(_load.driver_id, []).append(_load.load_id)
CALLED_BEFORE = "D-1001"  # the others never call the gateway before the outage
# The events each driver reports on their first load while loads is down, in order.
TRIP = [("arrived", 1), ("departed", 1), ("arrived", 2)]
SEEDED_VERSION = 1  # a load as assigned; each applied event adds one
DRAIN_TIMEOUT_SECONDS = 60
APP_ATTEMPTS = 5  # the app retries a 503 with the same key, a few times


def post_as_the_app(
    http: httpx.Client, path: str, body: dict[str, object], headers: dict[str, str]
) -> httpx.Response:
    """POST as the app does: a 503 (the write could not be made durable within its
    deadlines, which a busy host can miss) is retried after a short pause with the same
    idempotency key, so a message that did reach the queue is deduplicated. Any other
    answer, or the last attempt's, is returned."""
    for _ in range(APP_ATTEMPTS - 1):
        r = http.post(path, json=body, headers=headers)
        if r.status_code != 503:
            return r
        assert r.headers.get("retry-after"), r.headers  # the app is told when to retry
        time.sleep(0.2)  # not Retry-After's whole seconds: the test's time is bounded
    return http.post(path, json=body, headers=headers)


def test_loads_killed_and_every_gateway_restarted_cold_drivers_read_and_write(api, stack):
    assert set(ASSIGNED) == {"D-1001", "D-1002", "D-1003"}
    auth = {d: api.auth(Role.DRIVER, d) for d in ASSIGNED}
    trip_load = {d: loads[0] for d, loads in ASSIGNED.items()}
    store = api.aws_resource("dynamodb").Table(
        stack.function_env("GatewayFunction")["RELAY_FALLBACK_STORE_TABLE"]
    )

    # GIVEN every seeded assignment projected into the fallback store (from the stream)
    def projected() -> bool:
        return all(
            "Item" in store.get_item(Key={"pk": f"driver#{d}", "sk": f"load#{ld}"})
            for d, loads in ASSIGNED.items()
            for ld in loads
        )

    assert wait_until(projected, timeout=30)
    # AND one driver has used the app through the balancer; the others never have
    assert api.http.get("/loads", headers=auth[CALLED_BEFORE]).status_code == 200

    # WHEN the loads module is killed through the supervisor (held down)
    outage = time.monotonic()
    stopped = fleet.relay(stack, "stop", "loads")
    assert stopped.returncode == 0, stopped.stderr
    assert not stack.processes["loads"].running()
    try:
        # AND every gateway process is restarted cold, one after the other
        before = {n: stack.processes[n].pid for n in stack.gateway_names}
        restart_took = {}
        for name in stack.gateway_names:
            started = time.monotonic()
            done = fleet.relay(stack, "restart", name)
            assert done.returncode == 0, done.stderr
            restart_took[name] = time.monotonic() - started
        after = {n: stack.processes[n].pid for n in stack.gateway_names}
        assert all(after[n] != before[n] for n in before), (before, after)

        # THEN each instance (on its own port) and the balancer answer every driver's
        # loads, degraded, from the fallback store, with the stored copy's age
        ages: list[float] = []
        fronts = {n: stack.processes[n].url for n in stack.gateway_names}
        fronts["balancer"] = stack.gateway_url
        for front, url in fronts.items():
            with httpx.Client(base_url=url, timeout=10) as c:
                for driver, loads in ASSIGNED.items():
                    r = c.get("/loads", headers=auth[driver])
                    assert r.status_code == 200, (front, driver, r.status_code, r.text)
                    assert sorted(ld["load_id"] for ld in r.json()["items"]) == sorted(loads)
                    marker = DegradedMarker.parse(r.headers["relay-degraded"])
                    assert marker.module == "loads", (front, marker)
                    assert marker.fallback is FallbackKind.LAST_KNOWN_GOOD, (front, marker)
                    assert marker.age is not None and marker.age >= 0, (front, marker)
                    ages.append(marker.age)

        # AND the drivers' events, through the balancer (so over the instances), answer
        # 202 with where to follow them
        status_urls: dict[str, list[str]] = {d: [] for d in ASSIGNED}
        for i, (kind, stop) in enumerate(TRIP):
            for driver, load_id in trip_load.items():
                key = f"fleet-cold-{load_id}-{i}"
                r = post_as_the_app(
                    api.http,
                    f"/loads/{load_id}/events",
                    {"kind": kind, "stop_seq": stop},
                    {**auth[driver], "idempotency-key": key},
                )
                assert r.status_code == 202, (driver, key, r.status_code, r.text)
                assert r.json()["status_url"] == f"/deferred/{key}"
                marker = DegradedMarker.parse(r.headers["relay-degraded"])
                assert marker.fallback is FallbackKind.DEFERRED
                status_urls[driver].append(r.json()["status_url"])
        # (nothing reached the events table while loads was down)
        assert all(events_of(api, stack, ld) == [] for ld in trip_load.values())
    finally:
        # WHEN loads is started again
        restarted = fleet.relay(stack, "start", "loads")
    assert restarted.returncode == 0, restarted.stderr
    back = time.monotonic()

    # THEN once the queue drains every event is applied exactly once, in order
    def all_events_applied() -> bool:
        return all(len(events_of(api, stack, ld)) >= len(TRIP) for ld in trip_load.values())

    assert wait_until(all_events_applied, timeout=DRAIN_TIMEOUT_SECONDS, interval=0.25)
    events_at = time.monotonic() - back

    # AND each 202's status_url reads applied
    def all_recorded_applied() -> bool:
        return all(
            api.http.get(url, headers=auth[d]).json().get("state") == "applied"
            for d, urls in status_urls.items()
            for url in urls
        )

    assert wait_until(all_recorded_applied, timeout=DRAIN_TIMEOUT_SECONDS, interval=0.25)
    ledger_at = time.monotonic() - back
    for driver, urls in status_urls.items():
        for url in urls:
            state = api.http.get(url, headers=auth[driver]).json()
            assert state["state"] == "applied" and state.get("refusal") is None, state

    for load_id in trip_load.values():
        events = events_of(api, stack, load_id)
        assert [(e["kind"], e["stop_seq"]) for e in events] == TRIP, (load_id, events)
        seqs = [
            int(i["seq"])
            for i in api.aws_resource("dynamodb")
            .Table(stack.function_env("LoadsFunction")["LOAD_EVENTS_TABLE"])
            .query(KeyConditionExpression=Key("load_id").eq(load_id))["Items"]
        ]
        assert len(seqs) == len(set(seqs)) == len(TRIP), (load_id, seqs)

    # AND the loads, read live again through the balancer, show each trip applied once
    def live_and_current() -> bool:
        for driver, load_id in trip_load.items():
            r = api.http.get(f"/loads/{load_id}", headers=auth[driver])
            if r.status_code != 200 or "relay-degraded" in r.headers:
                return False
            if r.json()["version"] != SEEDED_VERSION + len(TRIP):
                return False
        return True

    assert wait_until(live_and_current, timeout=DRAIN_TIMEOUT_SECONDS, interval=0.25)
    live_at = time.monotonic() - back
    for driver, load_id in trip_load.items():
        load = api.http.get(f"/loads/{load_id}", headers=auth[driver]).json()
        assert (load["status"], load["current_stop"]) == ("at_stop", 2), load
        assert load["version"] == SEEDED_VERSION + len(TRIP), load

    print(
        f"\nloads killed, {len(restart_took)} gateways restarted cold "
        f"({', '.join(f'{n} {t:.1f} s' for n, t in restart_took.items())}); "
        f"{len(ASSIGNED)} drivers x {len(fronts)} fronts read degraded "
        f"(store copy age {min(ages):.1f}-{max(ages):.1f} s); "
        f"{sum(map(len, status_urls.values()))} events answered 202; after loads started "
        f"again: all in the events table in {events_at:.1f} s, every status_url applied in "
        f"{ledger_at:.1f} s, every load read live and current in {live_at:.1f} s "
        f"(outage {back - outage:.1f} s)"
    )
