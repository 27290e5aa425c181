"""Deferred writes are replayed with their key, in order per driver, and kept until applied."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest

from gateway.deferred.queue import DeferredWrite
from gateway.deferred.replayer import Replayer, ReplayFailed, make_handler, peer_addresses
from gateway.levers import ActiveLevers
from gateway.routing.routes import RouteTable
from gateway.security.signer import SignerProvider
from module_kit import metrics
from shared_contracts.identity import IdentityContext, Role
from shared_contracts.levers import Lever, LeverType
from tests.unit.gateway.conftest import UPSTREAMS, identity_of
from tests.unit.gateway.lever_fakes import FakeLeverStore

DRIVER = IdentityContext(sub="D-1", role=Role.DRIVER, driver_id="D-1")


def write(i: int, driver: str = "D-1") -> DeferredWrite:
    return DeferredWrite(
        tracking_id=f"key-{i}",
        module="loads",
        method="POST",
        path="/loads/L-1/events",
        body=json.dumps({"kind": "arrived", "n": i}),
        identity=DRIVER,
        caller=driver,
        request_id=f"r-{i}",
        accepted_at=datetime(2026, 11, 22, tzinfo=UTC),
        headers={"content-type": "application/json"},
    )


@pytest.fixture
def replayer(settings):
    return Replayer(
        RouteTable.load(settings.routes_file, env=UPSTREAMS),
        httpx.Client(),
        SignerProvider(settings),
    )


def test_replay_sends_the_original_key_identity_and_body(replayer, upstream):
    route = upstream.post("http://loads.test/loads/L-1/events").mock(
        return_value=httpx.Response(201, json={})
    )
    assert replayer.apply(write(1)) == 201
    sent = route.calls.last.request
    assert sent.headers["idempotency-key"] == "key-1"
    assert identity_of(sent, "loads") == DRIVER  # signed afresh at replay time
    assert json.loads(sent.content)["n"] == 1


def test_a_replayed_write_tells_the_module_it_is_a_replay(replayer, upstream):
    # the module counts what it applies from the queue as via="replay" (module_kit.metrics)
    route = upstream.post("http://loads.test/loads/L-1/events").mock(
        return_value=httpx.Response(201, json={})
    )
    assert replayer.apply(write(1)) == 201
    sent = route.calls.last.request
    assert metrics.via_of(list(sent.headers.raw)) == metrics.VIA_REPLAY


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503),
        httpx.Response(500),
        httpx.Response(429),
        httpx.Response(409, json={"type": "urn:relay:problem:idempotency-in-progress"}),
    ],
)
def test_module_still_unwell_keeps_the_write_queued(replayer, upstream, answer):
    upstream.post("http://loads.test/loads/L-1/events").mock(return_value=answer)
    with pytest.raises(ReplayFailed):
        replayer.apply(write(1))


def test_unreachable_module_keeps_the_write_queued(replayer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").mock(side_effect=httpx.ConnectError("x"))
    with pytest.raises(ReplayFailed):
        replayer.apply(write(1))


def test_a_write_the_module_refuses_for_good_is_not_retried_forever(replayer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").mock(
        return_value=httpx.Response(409, json={"type": "urn:relay:problem:invalid-transition"})
    )
    assert replayer.apply(write(1)) == 409


def test_after_a_failure_the_rest_of_that_drivers_batch_waits(replayer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").mock(
        side_effect=[httpx.Response(201, json={}), httpx.Response(503)]
    )
    records = [
        {
            "messageId": f"m{i}",
            "receiptHandle": "h",
            "body": write(i).model_dump_json(),
            "attributes": {"MessageGroupId": "D-1", "ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q.fifo",
            "awsRegion": "us-east-1",
        }
        for i in range(4)
    ]
    result = make_handler(replayer)({"Records": records}, None)
    # m0 applied; m1 failed; m2, m3 must not overtake it
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["m1", "m2", "m3"]


def test_one_drivers_failing_write_does_not_hold_up_another_drivers(replayer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").mock(
        side_effect=[
            httpx.Response(503),
            httpx.Response(201, json={}),
            httpx.Response(201, json={}),
        ]
    )
    records = [
        {
            "messageId": f"m{i}",
            "receiptHandle": "h",
            "body": write(i, driver).model_dump_json(),
            "attributes": {"MessageGroupId": driver, "ApproximateReceiveCount": "1"},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q.fifo",
            "awsRegion": "us-east-1",
        }
        for i, driver in enumerate(["D-1", "D-2", "D-1", "D-2"])
    ]
    result = make_handler(replayer)({"Records": records}, None)
    # D-1's first write failed: its second waits; D-2's writes are applied
    assert [f["itemIdentifier"] for f in result["batchItemFailures"]] == ["m0", "m2"]


# --- a peer region ----------------------------------------------------------------------


@pytest.fixture
def with_peer(settings):
    peers = json.dumps({"us-west-2": {"loads": "http://loads.west.test"}})
    s = settings.model_copy(update={"peer_upstreams": peers})
    table = RouteTable.load(s.routes_file, env=UPSTREAMS)
    return Replayer(table, httpx.Client(), SignerProvider(s), elsewhere=peer_addresses(s, table))


@pytest.mark.parametrize(
    "down", [httpx.Response(500), httpx.ConnectError("loads is gone in this region")]
)
def test_a_write_whose_module_is_down_here_is_applied_in_the_peer_region(with_peer, upstream, down):
    here = upstream.post("http://loads.test/loads/L-1/events")
    here.mock(
        **({"return_value": down} if isinstance(down, httpx.Response) else {"side_effect": down})
    )
    there = upstream.post("http://loads.west.test/loads/L-1/events").respond(201, json={})
    assert with_peer.apply(write(1)) == 201
    assert here.call_count == 1
    sent = there.calls.last.request
    assert sent.headers["idempotency-key"] == "key-1"  # applied once, in either region
    assert identity_of(sent, "loads") == DRIVER


def test_a_peer_is_asked_only_when_the_module_is_down_here(with_peer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").respond(
        409, json={"type": "urn:relay:problem:idempotency-in-progress"}
    )
    there = upstream.post("http://loads.west.test/loads/L-1/events").respond(201, json={})
    with pytest.raises(ReplayFailed):
        with_peer.apply(write(1))  # the module is up here: it decides
    assert there.call_count == 0


def test_down_in_every_region_the_write_stays_queued(with_peer, upstream):
    upstream.post("http://loads.test/loads/L-1/events").respond(503)
    upstream.post("http://loads.west.test/loads/L-1/events").respond(503)
    with pytest.raises(ReplayFailed, match="503"):
        with_peer.apply(write(1))


def test_a_module_held_on_its_fallback_by_a_lever_gets_no_replayed_writes(settings, upstream):
    store = FakeLeverStore()
    replayer = Replayer(
        RouteTable.load(settings.routes_file, env=UPSTREAMS),
        httpx.Client(),
        SignerProvider(settings),
        levers=ActiveLevers(store, background=False),
    )
    route = upstream.post("http://loads.test/loads/L-1/events").mock(
        return_value=httpx.Response(201, json={})
    )
    now = int(time.time())
    store.items["fallback:loads"] = Lever(
        lever_id="fallback:loads",
        type=LeverType.FALLBACK,
        target="loads",
        who="ops-1",
        why="module misbehaving",
        pulled_at=now,
        expires_at=now + 60,
    )
    with pytest.raises(ReplayFailed, match="lever"):
        replayer.apply(write(1))  # stays queued
    assert route.call_count == 0
    del store.items["fallback:loads"]  # released: read afresh for the next write
    assert replayer.apply(write(1)) == 201 and route.call_count == 1
