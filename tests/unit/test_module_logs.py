"""A module's requests each log one JSON line: route template, status, outcome, caller hash."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from module_kit import logs
from module_kit.app import module_app
from module_kit.http import DriverIdentity
from shared_contracts.errors import NotFoundError
from shared_contracts.identity import IdentityContext, Role
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY, TEST_IDENTITY_SIGNER

DRIVER = IdentityContext(sub="sub-5a1c", role=Role.DRIVER, driver_id="D-4242")


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, io.StringIO]:
    monkeypatch.setenv("RELAY_IDENTITY_PUBLIC_KEY", TEST_IDENTITY_PUBLIC_KEY)
    monkeypatch.delenv("POWERTOOLS_SERVICE_NAME", raising=False)
    app = module_app("probe", title="Relay probe", service=object())
    buf = io.StringIO()
    logs.setup_logging("probe", stream=buf)

    @app.get("/things/{thing_id}")
    def thing(thing_id: str, identity: DriverIdentity) -> dict[str, str]:
        logging.getLogger("relay.probe").warning("looking up %s", thing_id)
        if thing_id == "missing":
            raise NotFoundError("no such thing")
        return {"thing": thing_id, "driver": identity.driver}

    return TestClient(app), buf


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_each_request_logs_its_route_status_and_outcome_with_a_caller_hash(probe):
    client, buf = probe
    signed = {"x-relay-identity": TEST_IDENTITY_SIGNER.sign(DRIVER, audience="probe")}
    ok = client.get("/things/T-1", headers={**signed, "x-request-id": "req-0000000001"})
    missing = client.get("/things/missing", headers={**signed, "x-request-id": "req-0000000002"})
    client.get("/healthz")
    assert (ok.status_code, missing.status_code) == (200, 404)
    out = _lines(buf)
    requests = [line for line in out if line["message"].startswith("request ")]
    # THEN one line per request (health checks left out), with the route's template
    assert [(r["request_id"], r["status"], r["outcome"]) for r in requests] == [
        ("req-0000000001", 200, "ok"),
        ("req-0000000002", 404, "client-error"),
    ]
    first = requests[0]
    assert first["message"] == "request GET /things/{thing_id}"
    assert first["route"] == "/things/{thing_id}"
    assert first["module"] == "probe" and first["service"] == "probe"
    assert first["caller_hash"] == logs.caller_hash(DRIVER.sub)
    assert isinstance(first["duration_ms"], float)
    # AND a line logged while handling the request carries its fields too
    inner = [line for line in out if line["message"] == "looking up T-1"]
    assert inner[0]["request_id"] == "req-0000000001"
    assert inner[0]["caller_hash"] == logs.caller_hash(DRIVER.sub)
    # AND neither the sub nor the driver id appears anywhere
    assert DRIVER.sub not in buf.getvalue() and "D-4242" not in buf.getvalue()


def test_the_service_name_comes_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "loads")
    buf = io.StringIO()
    logs.setup_logging("probe", stream=buf)
    logging.getLogger("relay.x").warning("hello", extra=logs.fields(module="loads"))
    (line,) = _lines(buf)
    assert (line["service"], line["module"], line["message"]) == ("loads", "loads", "hello")
