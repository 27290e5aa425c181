"""The gateway's logs are JSON lines with the request's fields; a caller only as a hash."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import build_fallbacks, create_app
from gateway.routing.routes import RouteTable
from module_kit import logs
from shared_contracts.identity import Role

from .conftest import UPSTREAMS

DRIVER_ID = "D-7734"  # the token's sub too (DevIssuer mints sub = driver id here)


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send_message(self, **kwargs: object) -> dict:
        self.sent.append(kwargs)
        return {"MessageId": str(len(self.sent))}


@pytest.fixture
def buf() -> io.StringIO:
    return io.StringIO()


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_deferred_writes_and_breaker_transitions_log_request_fields_not_the_driver(
    settings, upstream, tokens, buf
):
    # GIVEN a gateway with a deferred-write queue, and the message module down
    s = settings.model_copy(update={"deferred_queue_url": "https://sqs.test/queue"})
    sqs = RecordingSqs()
    routes = RouteTable.load(s.routes_file, env=UPSTREAMS)
    app = create_app(s, routes=routes, fallbacks=build_fallbacks(s, sqs=sqs))
    logs.setup_logging("gateway", stream=buf)  # after create_app: the test's stream
    upstream.post("http://message.test/message").mock(side_effect=httpx.ConnectError("down"))
    auth = {"authorization": "Bearer " + tokens.mint(DRIVER_ID, Role.DRIVER, DRIVER_ID)}
    # WHEN the driver sends messages until the breaker opens
    with TestClient(app) as client:
        request_ids = []
        for n in range(8):
            response = client.post("/message", json={"body": f"running late {n}"}, headers=auth)
            assert response.status_code == 202
            request_ids.append(response.headers["x-request-id"])
    out = lines(buf)
    # THEN no line carries the driver's id, raw, anywhere
    assert out and DRIVER_ID not in buf.getvalue()
    expected_hash = logs.caller_hash(DRIVER_ID)
    assert len(expected_hash) == 16 and expected_hash != DRIVER_ID
    # AND each deferred write is a line with the request's fields and outcome
    deferred = [line for line in out if line["message"].startswith("deferred write ")]
    assert [line["request_id"] for line in deferred] == request_ids
    first = deferred[0]
    assert first["message"].endswith(f"to message for {expected_hash}")
    assert first["module"] == "message"
    assert first["route"] == "/message"
    assert first["outcome"] == "deferred"
    assert first["status"] == 202
    assert first["caller_hash"] == expected_hash
    assert first["service"] == "gateway" and first["level"] == "WARNING"
    # AND the breaker's transition carries the request that tripped it
    opened = [line for line in out if line.get("breaker") == "open"]
    assert len(opened) == 1, out
    trip = opened[0]
    assert trip["message"].startswith("breaker message: closed -> open")
    assert trip["module"] == "message" and trip["route"] == "/message"
    assert trip["request_id"] in request_ids
    assert trip["caller_hash"] == expected_hash
    assert trip["name"] == "relay.gateway.breaker"
    # AND the fallback's line for the same request has the outcome
    served = [
        line
        for line in out
        if line["request_id"] == trip["request_id"] and "served by deferred" in line["message"]
    ]
    assert [line["outcome"] for line in served] == ["deferred"]
    assert len(sqs.sent) == 8


def test_a_503_logs_its_outcome_and_the_access_line_is_opt_in(settings, upstream, bearer, buf):
    # GIVEN a gateway with the access line on, and the dispatch route (no fallback) down
    s = settings.model_copy(update={"access_log": True})
    app = create_app(s, routes=RouteTable.load(s.routes_file, env=UPSTREAMS))
    logs.setup_logging("gateway", stream=buf)
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json=[]))
    upstream.post("http://loads.test/dispatch/assignments").mock(
        side_effect=httpx.ConnectError("down")
    )
    with TestClient(app) as client:
        live = client.get("/loads", headers=bearer(Role.DRIVER, DRIVER_ID))
        down = client.post(
            "/dispatch/assignments",
            json={"load_id": "L-1", "driver_id": DRIVER_ID, "route": ["F-CHI"]},
            headers=bearer(Role.DISPATCH, None),
        )
    assert live.status_code == 200 and down.status_code == 503
    out = lines(buf)
    access = {line["request_id"]: line for line in out if line["message"].startswith("request ")}
    # THEN one access line per forward, with its outcome and status
    assert access[live.headers["x-request-id"]]["outcome"] == "live"
    assert access[live.headers["x-request-id"]]["status"] == 200
    assert access[live.headers["x-request-id"]]["caller_hash"] == logs.caller_hash(DRIVER_ID)
    failed = access[down.headers["x-request-id"]]
    assert (failed["outcome"], failed["status"], failed["route"]) == (
        "unavailable",
        503,
        "/dispatch/assignments",
    )
    # AND the 503's warning line carries the same outcome
    warning = [line for line in out if "no fallback answer" in line["message"]]
    assert [(w["outcome"], w["module"]) for w in warning] == [("unavailable", "loads")]
    assert DRIVER_ID not in buf.getvalue()


def test_without_the_setting_no_access_line_is_logged(settings, upstream, bearer, buf):
    app = create_app(settings, routes=RouteTable.load(settings.routes_file, env=UPSTREAMS))
    logs.setup_logging("gateway", stream=buf)
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json=[]))
    with TestClient(app) as client:
        assert client.get("/loads", headers=bearer()).status_code == 200
    assert not [line for line in lines(buf) if line["message"].startswith("request ")]
