"""The replayer's lines carry the original request's fields and the replay's outcome."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import httpx

from gateway.deferred.queue import DeferredWrite
from gateway.deferred.replayer import Replayer
from gateway.resilience.faults import FaultInjector, FaultKind, FaultSpec
from gateway.routing.routes import RouteTable
from gateway.security.signer import SignerProvider
from module_kit import logs
from shared_contracts.identity import IdentityContext, Role
from tests.unit.gateway.conftest import UPSTREAMS

DRIVER = IdentityContext(sub="sub-driver-9", role=Role.DRIVER, driver_id="D-9009")


def _write(i: int) -> DeferredWrite:
    return DeferredWrite(
        tracking_id=f"key-{i}",
        module="loads",
        method="POST",
        path="/loads/L-1/events",
        body=json.dumps({"kind": "arrived"}),
        identity=DRIVER,
        caller=DRIVER.sub,
        request_id=f"req-{i:010d}",
        accepted_at=datetime(2026, 11, 22, tzinfo=UTC),
        headers={"content-type": "application/json"},
    )


def test_applied_and_refused_replays_log_their_outcome_with_the_request_fields(settings, upstream):
    replayer = Replayer(
        RouteTable.load(settings.routes_file, env=UPSTREAMS),
        httpx.Client(),
        SignerProvider(settings),
    )
    buf = io.StringIO()
    logs.setup_logging("gateway-replay", stream=buf)
    upstream.post("http://loads.test/loads/L-1/events").mock(
        side_effect=[
            httpx.Response(201, json={}),
            httpx.Response(409, json={"type": "urn:relay:problem:invalid-transition"}),
        ]
    )
    assert replayer.apply(_write(1)) == 201
    assert replayer.apply(_write(2)) == 409
    out = [json.loads(line) for line in buf.getvalue().splitlines()]
    picked = [
        (line["request_id"], line["module"], line["route"], line["outcome"], line["status"])
        for line in out
    ]
    assert picked == [
        ("req-0000000001", "loads", "/loads", "applied", 201),
        ("req-0000000002", "loads", "/loads", "refused", 409),
    ]
    assert "refused by loads for good" in out[1]["message"]
    assert {line["caller_hash"] for line in out} == {logs.caller_hash(DRIVER.sub)}
    assert DRIVER.sub not in buf.getvalue() and "D-9009" not in buf.getvalue()
    # AND nothing stays bound once the write is done
    assert logs.current_request() is None


def test_fault_lines_name_the_operator_by_hash_only():
    buf = io.StringIO()
    logs.setup_logging("gateway", stream=buf)
    faults = FaultInjector()
    faults.set("loads", FaultSpec(kind=FaultKind.ERROR), set_by="ops-sub-77")
    assert faults.clear("loads", cleared_by="ops-sub-77")
    out = [json.loads(line) for line in buf.getvalue().splitlines()]
    expected = logs.caller_hash("ops-sub-77")
    assert [line["message"].split(":")[0] for line in out] == [
        f"fault set on loads by {expected}",
        f"fault on loads cleared by {expected}",
    ]
    assert all(line["module"] == "loads" and line["caller_hash"] == expected for line in out)
    assert "ops-sub-77" not in buf.getvalue()
