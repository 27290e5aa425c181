"""Deferred writes: acknowledged only when durable and visible, in order, and tracked.

Against the ledger table and queue that template.yaml deploys (moto in-process).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import boto3
import httpx
import pytest

from gateway.deferred.ledger import DeferredLedger, LedgerError
from gateway.deferred.queue import DeferredWrite
from gateway.deferred.replayer import Replayer, ReplayFailed
from gateway.resilience.faults import ControlTableFaults, FaultInjector, FaultSpec
from gateway.routing.routes import RouteTable
from gateway.security.signer import SignerProvider
from shared_contracts.degraded import DeferredRefusal, DeferredState, DegradedMarker, FallbackKind
from shared_contracts.identity import IdentityContext, Role
from tests.fakes import NOW, MonotonicClock, WallClock
from tests.unit.gateway.conftest import UPSTREAMS
from tests.unit.gateway.test_resilience import Harness

pytestmark = pytest.mark.anyio
EVENTS = "http://loads.test/loads/L-1/events"
TEST_DEADLINE_SECONDS = 10.0


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def gateway_env(deployed) -> dict[str, str]:
    return deployed.env("GatewayFunction")


@pytest.fixture
def make(settings, gateway_env, upstream):
    def build(**overrides) -> Harness:
        s = settings.model_copy(
            update={
                "deferred_queue_url": gateway_env["RELAY_DEFERRED_QUEUE_URL"],
                "deferred_ledger_table": gateway_env["RELAY_DEFERRED_LEDGER_TABLE"],
                "control_table": gateway_env["RELAY_CONTROL_TABLE"],
                # The emulator runs in-process on a busy test machine: deadlines that only
                # a stalled dependency misses (the deadline tests set their own).
                "queue_timeout_seconds": TEST_DEADLINE_SECONDS,
                "store_timeout_seconds": TEST_DEADLINE_SECONDS,
                **overrides,
            }
        )
        return Harness(MonotonicClock(), WallClock(), s)

    return build


async def test_writes_are_deferred_durably_in_order_per_driver(aws, settings, upstream):
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="deferred.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    h = Harness(
        MonotonicClock(), WallClock(), settings.model_copy(update={"deferred_queue_url": url})
    )
    upstream.post(url__regex=r"http://loads.test/loads/L-1/events").mock(
        side_effect=httpx.ConnectError("down")
    )
    ids = []
    for kind in ("arrived", "departed"):
        r = await h.client.post(
            "/loads/L-1/events",
            json={"kind": kind, "stop_seq": 1},
            headers={**h.auth(), "idempotency-key": f"key-{kind}-1"},
        )
        assert r.status_code == 202
        assert DegradedMarker.parse(r.headers["relay-degraded"]).fallback is FallbackKind.DEFERRED
        ids.append(r.json()["tracking_id"])
    assert ids == ["key-arrived-1", "key-departed-1"]
    msgs = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["MessageGroupId"]
    )["Messages"]
    bodies = [json.loads(m["Body"]) for m in msgs]
    assert [json.loads(b["body"])["kind"] for b in bodies] == ["arrived", "departed"]
    assert {m["Attributes"]["MessageGroupId"] for m in msgs} == {"loads:D-1001"}


def ledger_of(h: Harness) -> DeferredLedger:
    return h.app.state.ledger


async def post_event(h: Harness, key: str, kind: str = "arrived") -> httpx.Response:
    return await h.client.post(
        "/loads/L-1/events",
        json={"kind": kind, "stop_seq": 1},
        headers={**h.auth(), "idempotency-key": key},
    )


def queued(env: dict[str, str]) -> list[dict]:
    msgs = (
        boto3.client("sqs")
        .receive_message(QueueUrl=env["RELAY_DEFERRED_QUEUE_URL"], MaxNumberOfMessages=10)
        .get("Messages", [])
    )
    return [json.loads(m["Body"]) for m in msgs]


# --- acknowledged means durable, visible, in order --------------------------------------


async def test_a_deferred_write_is_tracked_and_later_writes_queue_behind_it(
    make, upstream, gateway_env
):
    h = make()
    events = upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    # GIVEN a write deferred while loads is down
    first = await post_event(h, "key-first-1")
    assert first.status_code == 202
    assert first.json()["status_url"] == "/deferred/key-first-1"
    status = await h.client.get("/deferred/key-first-1", headers=h.auth())
    assert status.status_code == 200
    assert (status.json()["state"], status.json()["module"]) == ("pending", "loads")
    assert datetime.fromisoformat(status.json()["accepted_at"]) == NOW
    # WHEN loads is back and the driver writes again
    events.mock(return_value=httpx.Response(201, json={}))
    calls = events.call_count
    second = await post_event(h, "key-second-1", "departed")
    # THEN the write queues behind the pending one instead of overtaking it
    assert second.status_code == 202 and events.call_count == calls
    writes = [DeferredWrite.model_validate(q) for q in queued(gateway_env)]
    assert [w.tracking_id for w in writes] == ["key-first-1", "key-second-1"]
    # AND once both are applied, writes go live again
    for write in writes:
        ledger_of(h).decide(write, DeferredState.APPLIED)
    assert (await post_event(h, "key-third-1")).status_code == 201


async def test_messages_queued_for_message_do_not_hold_up_the_drivers_trip_events(
    make, upstream, gateway_env
):
    h = make()
    messages = upstream.post("http://message.test/message").mock(
        side_effect=httpx.ConnectError("down")
    )
    events = upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))
    # GIVEN a driver's message deferred while message is down
    sent = await h.client.post(
        "/message",
        json={"body": "running late"},
        headers={**h.auth(), "idempotency-key": "msg-1-key"},
    )
    assert sent.status_code == 202
    # WHEN message is back but its queue not yet drained, and the driver reports an event
    messages.mock(return_value=httpx.Response(201, json={}))
    calls = messages.call_count
    event = await post_event(h, "key-live-event-1")
    later = await h.client.post(
        "/message",
        json={"body": "at the gate"},
        headers={**h.auth(), "idempotency-key": "msg-2-key"},
    )
    # THEN loads applies the event live: order is kept per module, not across modules
    assert event.status_code == 201 and events.call_count == 1
    # AND the driver's next message still queues behind the pending one
    assert later.status_code == 202 and messages.call_count == calls
    sqs = boto3.client("sqs")
    msgs = sqs.receive_message(
        QueueUrl=gateway_env["RELAY_DEFERRED_QUEUE_URL"],
        MaxNumberOfMessages=10,
        AttributeNames=["MessageGroupId"],
    )["Messages"]
    assert [
        (m["Attributes"]["MessageGroupId"], json.loads(m["Body"])["tracking_id"]) for m in msgs
    ] == [
        ("message:D-1001", "msg-1-key"),
        ("message:D-1001", "msg-2-key"),
    ]


async def test_another_callers_tracking_id_is_not_found(make, upstream):
    h = make()
    upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    assert (await post_event(h, "key-mine-01")).status_code == 202
    other = await h.client.get("/deferred/key-mine-01", headers=h.auth(Role.DRIVER, "D-1002"))
    missing = await h.client.get("/deferred/key-none-01", headers=h.auth())
    assert other.status_code == missing.status_code == 404
    assert other.json()["type"] == missing.json()["type"]


async def test_a_retried_deferred_write_is_queued_once(make, upstream, gateway_env):
    h = make()
    upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    for _ in range(3):
        assert (await post_event(h, "key-retried-1")).status_code == 202
    assert [q["tracking_id"] for q in queued(gateway_env)] == ["key-retried-1"]


async def test_when_the_ledger_cannot_say_the_write_is_queued_not_sent_live(make, upstream):
    h = make()
    events = upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))

    def broken(caller: str, module: str) -> bool:
        raise LedgerError("unreachable")

    ledger_of(h).has_pending = broken  # type: ignore[method-assign]
    r = await post_event(h, "key-unsure-1")
    # order is never bet on a guess; and since the write is durable it is acknowledged
    assert r.status_code == 202 and events.call_count == 0


async def test_a_queue_that_stalls_gets_503_at_its_deadline_and_nothing_acknowledged(
    make, upstream
):
    release = threading.Event()

    class StalledSqs:
        def send_message(self, **kw: object) -> None:
            release.wait(5)

    h = make(queue_timeout_seconds=0.05)
    h.app.state.forwarder.fallbacks["deferred"].queue._sqs = StalledSqs()
    upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    try:
        r = await post_event(h, "key-stalled-1")
    finally:
        release.set()
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.headers["content-type"] == "application/problem+json"
    assert (await h.client.get("/deferred/key-stalled-1", headers=h.auth())).status_code == 404


async def test_queued_but_not_recorded_is_not_acknowledged(make, upstream):
    h = make()

    def broken(write: DeferredWrite) -> bool:
        raise LedgerError("unreachable")

    ledger_of(h).accept = broken  # type: ignore[method-assign]
    upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    r = await post_event(h, "key-unrecorded-1")
    assert r.status_code == 503 and r.headers["retry-after"]


async def test_every_forwarded_write_carries_the_time_the_gateway_accepted_it(make, upstream):
    h = make()
    events = upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))
    loads = upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": []})
    )
    await post_event(h, "key-stamped-1")
    await h.client.get("/loads", headers=h.auth())
    assert events.calls.last.request.headers["x-relay-accepted-at"] == NOW.isoformat()
    assert "x-relay-accepted-at" not in loads.calls.last.request.headers


async def test_operators_see_pending_and_refused_writes(make, upstream, gateway_env):
    h = make()
    upstream.post(EVENTS).mock(side_effect=httpx.ConnectError("down"))
    for key in ("key-ops-0001", "key-ops-0002"):
        await post_event(h, key)
    refused = DeferredWrite.model_validate(queued(gateway_env)[0])
    ledger_of(h).decide(
        refused,
        DeferredState.REFUSED,
        DeferredRefusal(status=409, code="invalid-transition", detail="not at stop 1"),
    )
    deferred = (await h.client.get("/ops/status", headers=h.auth(Role.OPS, None))).json()[
        "deferred"
    ]
    assert deferred["pending"]["count"] == 1
    assert deferred["refused"]["count"] == 1
    assert deferred["refused"]["newest"][0]["refusal"]["code"] == "invalid-transition"
    assert deferred["refused"]["newest"][0]["tracking_id"] == refused.tracking_id


# --- the replayer ---------------------------------------------------------------------

DRIVER = IdentityContext(sub="D-1", role=Role.DRIVER, driver_id="D-1")


def a_write(key: str = "key-replay-1") -> DeferredWrite:
    return DeferredWrite(
        tracking_id=key,
        module="loads",
        method="POST",
        path="/loads/L-1/events",
        body=json.dumps({"kind": "arrived"}),
        identity=DRIVER,
        caller="D-1",
        request_id="r-1",
        accepted_at=datetime(2026, 11, 22, 7, 59, 30, tzinfo=UTC),
        headers={"content-type": "application/json"},
    )


@pytest.fixture
def replay(settings, gateway_env):
    ledger = DeferredLedger(gateway_env["RELAY_DEFERRED_LEDGER_TABLE"])
    faults = FaultInjector(
        store=ControlTableFaults(gateway_env["RELAY_CONTROL_TABLE"]), clock=WallClock()
    )
    slept: list[float] = []
    replayer = Replayer(
        RouteTable.load(settings.routes_file, env=UPSTREAMS),
        httpx.Client(),
        SignerProvider(settings),
        ledger=ledger,
        faults=faults,
        sleep=slept.append,
    )
    ledger.accept(a_write())
    return replayer, ledger, faults, slept


def test_a_refusal_is_recorded_with_the_modules_reason_and_releases_the_queue(replay, upstream):
    replayer, ledger, _, _ = replay
    upstream.post(EVENTS).mock(
        return_value=httpx.Response(
            409,
            json={
                "type": "urn:relay:problem:invalid-transition",
                "status": 409,
                "detail": "arrived at stop 1, but the current stop is 2",
            },
        )
    )
    assert replayer.apply(a_write()) == 409
    status = ledger.status("D-1", "key-replay-1")
    assert status is not None and status.state is DeferredState.REFUSED
    assert status.refusal == DeferredRefusal(
        status=409, code="invalid-transition", detail="arrived at stop 1, but the current stop is 2"
    )
    assert ledger.has_pending("D-1", "loads") is False


def test_a_replay_carries_the_accepted_time_and_is_recorded_applied(replay, upstream):
    replayer, ledger, _, _ = replay
    route = upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))
    replayer.apply(a_write())
    assert route.calls.last.request.headers["x-relay-accepted-at"] == "2026-11-22T07:59:30+00:00"
    assert ledger.status("D-1", "key-replay-1").state is DeferredState.APPLIED
    assert ledger.has_pending("D-1", "loads") is False


def test_an_outcome_the_ledger_cannot_record_keeps_the_write_queued(replay, upstream):
    replayer, ledger, _, _ = replay
    upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))

    def broken(*args: object) -> None:
        raise LedgerError("unreachable")

    ledger.decide = broken  # type: ignore[method-assign]
    with pytest.raises(ReplayFailed):
        replayer.apply(a_write())


def test_a_fault_another_instance_set_holds_for_the_replayer(replay, upstream, gateway_env):
    replayer, ledger, faults, slept = replay
    route = upstream.post(EVENTS).mock(return_value=httpx.Response(201, json={}))
    # GIVEN an operator set faults through another instance (the gateway), sharing the table
    gateway_faults = FaultInjector(
        store=ControlTableFaults(gateway_env["RELAY_CONTROL_TABLE"]), clock=faults.clock
    )
    gateway_faults.set("loads", FaultSpec(kind="blackhole", ttl_seconds=60), "ops-1")
    # THEN the replayer does not call the module
    with pytest.raises(ReplayFailed, match="blackhole"):
        replayer.apply(a_write())
    assert route.call_count == 0 and ledger.has_pending("D-1", "loads")
    # AND a latency fault is waited out before the call
    gateway_faults.set("loads", FaultSpec(kind="latency", latency_ms=1500), "ops-1")
    faults.clock.now += 2  # past the replayer's refresh period
    assert replayer.apply(a_write()) == 201
    assert slept == [1.5]
    # AND a fault that expired (on the shared wall clock) holds no more
    gateway_faults.set("loads", FaultSpec(kind="error", ttl_seconds=30), "ops-1")
    faults.clock.now += 31
    assert replayer.apply(a_write("key-replay-2")) == 201
