"""A real module's answers name the release that produced them (``x-relay-version``)."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient

from shared_contracts.identity import Role
from tests.conftest import identity_header_for

FUNCTIONS = {
    "loads": "LoadsFunction",
    "gatepass": "GatepassFunction",
    "navigate": "NavigateFunction",
    "message": "MessageFunction",
}
# One read each module answers 200 for a driver with nothing of their own.
READS = {"loads": "/loads", "gatepass": "/gatepass", "navigate": "/healthz", "message": "/message"}


@pytest.mark.parametrize("module", FUNCTIONS)
def test_a_modules_answers_carry_its_release_version(module, deployed, monkeypatch):
    # GIVEN the module built as its function is deployed, with RELAY_VERSION set
    deployed.use_env(monkeypatch, FUNCTIONS[module])
    monkeypatch.setenv("RELAY_VERSION", "canary-3")
    app = importlib.import_module(f"modules.{module}.app").create_app()
    client = TestClient(app)
    identity = identity_header_for(module)(Role.DRIVER, "D-VERSION")
    # WHEN it answers a read and a route it does not have
    read = client.get(READS[module], headers=identity)
    missing = client.get(f"/{module}-no-such-route", headers=identity)
    # THEN both name the release
    assert (read.status_code, missing.status_code) == (200, 404)
    assert read.headers["x-relay-version"] == "canary-3"
    assert missing.headers["x-relay-version"] == "canary-3"


def test_the_lambda_handler_answers_with_the_function_version(deployed, monkeypatch):
    # GIVEN the loads handler imported as Lambda imports it: AWS_LAMBDA_FUNCTION_VERSION set
    deployed.use_env(monkeypatch, "LoadsFunction")
    monkeypatch.delenv("RELAY_VERSION", raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "12")
    handler = importlib.reload(importlib.import_module("modules.loads.handler")).handler
    identity = identity_header_for("loads")(Role.DRIVER, "D-VERSION")
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/loads",
        "rawQueryString": "",
        "headers": {"host": "abc.lambda-url.us-east-1.on.aws", **identity},
        "requestContext": {
            "http": {
                "method": "GET",
                "path": "/loads",
                "protocol": "HTTP/1.1",
                "sourceIp": "1.2.3.4",
            },
            "requestId": "r-1",
            "routeKey": "$default",
            "stage": "$default",
        },
        "isBase64Encoded": False,
    }
    # WHEN a function URL event is handled
    answer = handler(event, None)
    # THEN the function URL's response carries the version Lambda ran
    assert answer["statusCode"] == 200
    assert answer["headers"]["x-relay-version"] == "12"
