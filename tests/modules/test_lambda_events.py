"""Every sample event in events/<module>/ goes through that module's Lambda handler.

File names say the expected status: ``get-load.200.json``. The demo data of relay/demo.py
is seeded first, through the modules' own code, as the local stack does. Identity headers
are kept readable in the files (``unsigned:{...}``) and signed here, as the gateway would
sign them, since a signed context expires within a minute.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import boto3
import pytest

from relay.cloud import ROOT
from relay.seed import seed_demo_data
from shared_contracts.identity import IdentityContext
from tests.conftest import TEST_IDENTITY_SIGNER

FUNCTIONS = {
    "loads": "LoadsFunction",
    "gatepass": "GatepassFunction",
    "navigate": "NavigateFunction",
    "message": "MessageFunction",
}
EVENTS = sorted(p for m in FUNCTIONS for p in (ROOT / "events" / m).glob("*.json"))


class LambdaContext:
    function_name = "relay-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:relay-test"
    aws_request_id = "test-request"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 10_000


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_event_through_the_lambda_handler(path: Path, deployed, monkeypatch):
    module = path.parent.name
    for fn in FUNCTIONS.values():
        deployed.use_env(monkeypatch, fn)
    seed_demo_data(deployed.env, dynamodb=boto3.resource("dynamodb"), sqs=boto3.client("sqs"))
    handler = importlib.reload(importlib.import_module(f"modules.{module}.handler")).handler

    event = json.loads(path.read_text())
    identity = event["headers"].get("x-relay-identity", "")
    if identity.startswith("unsigned:"):
        context = IdentityContext.model_validate_json(identity.removeprefix("unsigned:"))
        event["headers"]["x-relay-identity"] = TEST_IDENTITY_SIGNER.sign(context, audience=module)
    response = handler(event, LambdaContext())

    expected = int(path.stem.rsplit(".", 1)[1])
    body = response.get("body") or ""
    assert not response["isBase64Encoded"], "JSON and problem+json bodies go out as text"
    assert response["statusCode"] == expected, body
    if expected >= 400:
        problem = json.loads(body)
        assert problem["status"] == expected and problem["type"].startswith("urn:relay:problem:")
