"""Game days for the promise of a 202: accepted means applied, once, in order, on time.

The real local stack: the loads module frozen (SIGSTOP) under a flaky client, writes
refused on replay, live writes while earlier ones are queued, faults that must hold for
the replayer, a slow module, and the emulator itself frozen.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from boto3.dynamodb.conditions import Key

from relay import demo
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration.conftest import wait_until

FIVE_STOPS = ["F-CHI", "F-IND", "F-CMH", "F-DET", "F-CHI"]
# The ten events of a five-stop trip, in the only order the load accepts them.
TRIP = [
    e
    for s in range(1, 6)
    for e in ([("arrived", s), ("departed", s)] if s < 5 else [("arrived", s), ("delivered", s)])
]


def assign(api, load_id: str, driver_id: str, route: list[str]) -> None:
    body = demo.assignment(load_id, driver_id, route, datetime.now(UTC)).model_dump(mode="json")
    r = api.http.post("/dispatch/assignments", json=body, headers=api.auth(Role.DISPATCH))
    assert r.status_code == 201, r.text


def events_of(api, stack, load_id: str) -> list[dict]:
    table = api.aws_resource("dynamodb").Table(
        stack.function_env("LoadsFunction")["LOAD_EVENTS_TABLE"]
    )
    items = table.query(KeyConditionExpression=Key("load_id").eq(load_id))["Items"]
    return [json.loads(i["doc"]) for i in sorted(items, key=lambda i: i["seq"])]


def set_fault(api, module: str, spec: dict) -> None:
    r = api.http.put(
        f"/ops/faults/{module}", json={"ttl_seconds": 120, **spec}, headers=api.auth(Role.OPS)
    )
    assert r.status_code == 200, r.text


def clear_fault(api, module: str) -> None:
    assert api.http.delete(f"/ops/faults/{module}", headers=api.auth(Role.OPS)).status_code == 204


def ops_status(api) -> dict:
    r = api.http.get("/ops/status", headers=api.auth(Role.OPS))
    assert r.status_code == 200, r.text
    return r.json()


# --- the frozen module and the flaky client --------------------------------------------


@dataclass
class Acked:
    key: str
    status: int
    first_sent: float
    acked_at: float


@dataclass
class FlakyDriver:
    """An app on a bad network: each attempt gives up after 50-300 ms and is retried with
    the same Idempotency-Key until the gateway acknowledges the event (201 or 202)."""

    api: object
    driver_id: str
    load_id: str
    pace_seconds: float
    deadline: float
    acked: list[Acked] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    attempts: int = 0

    def run(self) -> None:
        rng = random.Random(self.driver_id)
        headers = self.api.auth(Role.DRIVER, self.driver_id)
        with httpx.Client(base_url=self.api.stack.gateway_url) as client:
            for i, (kind, stop) in enumerate(TRIP):
                key = f"{self.load_id}-event-{i:02d}"
                first = time.time()
                while time.monotonic() < self.deadline:
                    self.attempts += 1
                    try:
                        r = client.post(
                            f"/loads/{self.load_id}/events",
                            json={"kind": kind, "stop_seq": stop},
                            headers={**headers, "idempotency-key": key},
                            timeout=rng.uniform(0.05, 0.3),
                        )
                    except httpx.TimeoutException:
                        continue
                    if r.status_code in (201, 202):
                        self.acked.append(Acked(key, r.status_code, first, time.time()))
                        break
                    if r.status_code not in (409, 429, 503) or (
                        r.status_code == 409 and "in-progress" not in r.text
                    ):
                        self.unexpected.append(f"{key}: {r.status_code} {r.text[:200]}")
                        return
                    time.sleep(rng.uniform(0.05, 0.2))
                else:
                    return
                time.sleep(self.pace_seconds)


def test_frozen_loads_and_a_flaky_client_every_acknowledged_event_applied_once_in_order(api, stack):
    drivers = [f"D-20{i:02d}" for i in range(1, 6)]
    for n, driver in enumerate(drivers):
        assign(api, f"L-80{n:02d}", driver, FIVE_STOPS)
    deadline = time.monotonic() + 240  # about 40 s normally; slow hosts take longer
    clients = [
        FlakyDriver(api, d, f"L-80{n:02d}", pace_seconds=2.5, deadline=deadline)
        for n, d in enumerate(drivers)
    ]
    threads = [threading.Thread(target=c.run) for c in clients]
    loads = stack.processes["loads"].proc
    assert loads is not None

    # GIVEN five drivers reporting a trip each over a flaky network
    for t in threads:
        t.start()
    try:
        # WHEN the loads module freezes for 20 s mid-trip (SIGSTOP: connections accepted,
        # nothing answered), then resumes with whatever it had been sent
        time.sleep(2.0)
        os.kill(loads.pid, signal.SIGSTOP)
        time.sleep(20.0)
    finally:
        os.kill(loads.pid, signal.SIGCONT)
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 1))

    # THEN every event was acknowledged
    for c in clients:
        assert c.unexpected == [], c.unexpected
        assert [a.key for a in c.acked] == [f"{c.load_id}-event-{i:02d}" for i in range(10)]
    # AND the freeze was felt: each driver had writes the gateway deferred (whether the app
    # saw that 202, or timed out and later got the applied write's 201 on a retry)
    deferred = {
        c.driver_id: [
            a.key
            for a in c.acked
            if api.http.get(
                f"/deferred/{a.key}", headers=api.auth(Role.DRIVER, c.driver_id)
            ).status_code
            == 200
        ]
        for c in clients
    }
    assert all(deferred.values()), deferred

    # AND once the queue drains, each trip is applied exactly once, in order
    def applied() -> bool:
        return all(len(events_of(api, stack, c.load_id)) >= len(TRIP) for c in clients)

    assert wait_until(applied, timeout=150, interval=0.5)
    for c in clients:
        events = events_of(api, stack, c.load_id)
        assert [(e["kind"], e["stop_seq"]) for e in events] == TRIP, c.load_id
        # AND each keeps the time the gateway accepted it, not the time it was replayed
        for event, ack in zip(events, c.acked, strict=True):
            occurred = datetime.fromisoformat(event["occurred_at"]).timestamp()
            assert ack.first_sent - 1 <= occurred <= ack.acked_at + 1, (ack, event)
        load = api.http.get(f"/loads/{c.load_id}", headers=api.auth(Role.DRIVER, c.driver_id))
        assert load.json()["status"] == "delivered" and load.json()["version"] == 11
        # AND the driver sees every deferred one applied once the replayer has recorded it
        # (a stale live attempt may have applied it first: the replay then only confirms)
        driver = api.auth(Role.DRIVER, c.driver_id)
        for key in deferred[c.driver_id]:
            path = f"/deferred/{key}"
            wait_until(
                lambda path=path, driver=driver: (
                    api.http.get(path, headers=driver).json().get("state") == "applied"
                ),
                timeout=120,
            )
            state = api.http.get(path, headers=driver).json()
            assert state.get("state") == "applied", state
    assert wait_until(lambda: ops_status(api)["deferred"]["pending"]["count"] == 0, timeout=10)


# --- refused on replay: kept, visible, counted -----------------------------------------


def test_a_write_refused_on_replay_is_kept_and_visible_to_driver_and_operators(api, stack):
    driver = api.auth(Role.DRIVER, "D-2101")
    assign(api, "L-8101", "D-2101", ["F-CHI", "F-IND"])
    # GIVEN loads is down: an impossible event (delivered before arriving) is accepted
    stack.stop_process("loads")
    try:
        r = api.http.post(
            "/loads/L-8101/events",
            json={"kind": "delivered", "stop_seq": 2},
            headers={**driver, "idempotency-key": "refused-on-replay-1"},
        )
        assert r.status_code == 202, r.text
        assert r.json()["status_url"] == "/deferred/refused-on-replay-1"
        pending = api.http.get("/deferred/refused-on-replay-1", headers=driver).json()
        assert pending["state"] == "pending" and pending["module"] == "loads"
    finally:
        stack.start_process("loads")

    # WHEN the module is back and refuses it on replay
    def decided() -> dict:
        return api.http.get("/deferred/refused-on-replay-1", headers=driver).json()

    assert wait_until(lambda: decided()["state"] != "pending", timeout=60)
    # THEN the driver sees it refused, with the module's reason
    state = decided()
    assert state["state"] == "refused"
    assert state["refusal"]["status"] == 409 and state["refusal"]["code"] == "invalid-transition"
    # AND operators see it, counted, with the write kept
    refused = ops_status(api)["deferred"]["refused"]
    assert refused["count"] >= 1
    assert "refused-on-replay-1" in [w["tracking_id"] for w in refused["newest"]]
    # AND nobody else can read it
    other = api.http.get("/deferred/refused-on-replay-1", headers=api.auth(Role.DRIVER, "D-2102"))
    assert other.status_code == 404


# --- order between the live path and the queue -----------------------------------------


def test_live_writes_queue_behind_a_drivers_pending_writes_across_gateway_restarts(api, stack):
    driver = api.auth(Role.DRIVER, "D-2201")
    assign(api, "L-8201", "D-2201", ["F-CHI", "F-IND"])
    # GIVEN the first event is queued (loads down) and the queue is not drained yet
    stack.stop_process("replay")
    stack.stop_process("loads")
    try:
        first = api.http.post(
            "/loads/L-8201/events",
            json={"kind": "arrived", "stop_seq": 1},
            headers={**driver, "idempotency-key": "order-8201-1"},
        )
        assert first.status_code == 202
    finally:
        stack.start_process("loads")
    # AND the gateway instance that took it is replaced (what it knew in memory is gone)
    stack.stop_process("gateway")
    stack.start_process("gateway")
    # WHEN the module is back and the driver reports the next event
    second = api.http.post(
        "/loads/L-8201/events",
        json={"kind": "departed", "stop_seq": 1},
        headers={**driver, "idempotency-key": "order-8201-2"},
    )
    # THEN it does not overtake the queue (live it would be refused: not arrived yet)
    assert second.status_code == 202, second.text
    assert DegradedMarker.parse(second.headers["relay-degraded"]).fallback is FallbackKind.DEFERRED
    # AND both are applied in order once the queue drains
    stack.start_process("replay")
    assert wait_until(lambda: len(events_of(api, stack, "L-8201")) == 2, timeout=60)
    assert [(e["kind"], e["stop_seq"]) for e in events_of(api, stack, "L-8201")] == [
        ("arrived", 1),
        ("departed", 1),
    ]
    # AND with nothing queued, writes go live again
    third = api.http.post(
        "/loads/L-8201/events",
        json={"kind": "arrived", "stop_seq": 2},
        headers={**driver, "idempotency-key": "order-8201-3"},
    )
    assert third.status_code == 201, third.text


# --- faults hold for the replayer ------------------------------------------------------


def test_a_fault_on_a_module_holds_for_replayed_writes(api, stack):
    driver = api.auth(Role.DRIVER, "D-2301")
    assign(api, "L-8301", "D-2301", ["F-CHI", "F-IND"])
    log = stack.state_dir / "logs" / "replay.log"
    seen = log.read_text().count("error fault injected") if log.exists() else 0
    # GIVEN a game day says loads fails every call
    set_fault(api, "loads", {"kind": "error", "error_rate": 1.0})
    try:
        r = api.http.post(
            "/loads/L-8301/events",
            json={"kind": "arrived", "stop_seq": 1},
            headers={**driver, "idempotency-key": "fault-8301-1"},
        )
        assert r.status_code == 202
        # WHEN the replayer picks the write up (twice)
        assert wait_until(
            lambda: log.read_text().count("error fault injected") >= seen + 2, timeout=30
        )
        # THEN it was not applied behind the game day's back
        assert events_of(api, stack, "L-8301") == []
        assert api.http.get("/deferred/fault-8301-1", headers=driver).json()["state"] == "pending"
    finally:
        clear_fault(api, "loads")
    # AND once the fault is cleared it is applied
    assert wait_until(lambda: len(events_of(api, stack, "L-8301")) == 1, timeout=60)


# --- a slow module is treated as sick --------------------------------------------------


def test_a_slow_module_opens_its_breaker_and_drivers_get_the_copy_at_once(api, stack):
    driver = api.auth(Role.DRIVER, "D-1001")
    assert api.http.get("/loads", headers=driver).status_code == 200  # a copy exists
    # GIVEN loads answers every call, but in 1.8 s of its 2 s deadline
    set_fault(api, "loads", {"kind": "latency", "latency_ms": 1800})
    try:
        polls = []
        for _ in range(8):
            started = time.monotonic()
            r = api.http.get("/loads", headers=driver)
            polls.append((r.status_code, "relay-degraded" in r.headers, time.monotonic() - started))
        # THEN after the breaker's fail_max slow calls the copy answers, without waiting
        assert all(status == 200 for status, _, _ in polls)
        assert [degraded for _, degraded, _ in polls[:5]] == [False] * 5
        assert all(degraded and took < 1.0 for _, degraded, took in polls[5:]), polls
        assert ops_status(api)["modules"]["loads"]["breaker"]["state"] == "open"
    finally:
        clear_fault(api, "loads")


# --- the emulator frozen: writes answer in bounded time, nothing half-acknowledged -----


def test_with_the_emulator_frozen_a_write_gets_503_in_bounded_time(api, stack):
    driver = api.auth(Role.DRIVER, "D-2401")
    emulator = stack.processes["emulator"].proc
    assert emulator is not None
    os.kill(emulator.pid, signal.SIGSTOP)
    try:
        # WHEN DynamoDB and SQS stop answering while a driver sends a message
        started = time.monotonic()
        r = api.http.post(
            "/message",
            json={"body": "stuck at the gate"},
            headers={**driver, "idempotency-key": "frozen-emulator-1"},
            timeout=15,
        )
        took = time.monotonic() - started
    finally:
        os.kill(emulator.pid, signal.SIGCONT)
    # THEN the gateway says so in bounded time, and acknowledges nothing it could not keep
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    assert took < 8, took

    # AND the app's retries with the same key land it exactly once (while the first
    # delivery's idempotency lease runs, the module answers 409 in-progress: retry later)
    def landed() -> bool:
        r = api.http.post(
            "/message",
            json={"body": "stuck at the gate"},
            headers={**driver, "idempotency-key": "frozen-emulator-1"},
        )
        assert r.status_code in (201, 202, 409, 503), r.text
        return r.status_code in (201, 202)

    assert wait_until(landed, timeout=60, interval=1.0)

    def inbox() -> list[dict]:
        return api.http.get("/message", headers=driver).json().get("items", [])

    assert wait_until(
        lambda: (
            len(inbox()) >= 1
            and "relay-degraded" not in api.http.get("/message", headers=driver).headers
        ),
        timeout=60,
    )
    assert [m["body"] for m in inbox()] == ["stuck at the gate"]
