"""Every sample event in events/<module>/ goes through that module's Lambda handler.

File names say the expected status: ``get-load.200.json``. Each event is sent in the four
shapes a module meets: as a function URL event (the file), as an HTTP API event on its
``$default`` stage and on a named stage (whose path starts with ``/<stage>``), and as a REST
API (payload 1.0) event; writes carry one Idempotency-Key, so the later shapes are answered
by the module's replay of the first (which only a matched route gives).

The demo data of relay/demo.py is seeded first, through the modules' own code, as the local
stack does; the handler then runs with its own function's environment only. Identity
headers are kept readable in the files (``unsigned:{...}``) and signed here, as the gateway
would sign them, since a signed context expires within a minute.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

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


def http_api_default(event: dict[str, Any]) -> dict[str, Any]:
    """The function URL event as an HTTP API sends it on its ``$default`` stage."""
    context = {**event["requestContext"], "domainName": "abc123.execute-api.amazonaws.com"}
    return {**event, "requestContext": context}


def http_api_stage(event: dict[str, Any], stage: str = "prod") -> dict[str, Any]:
    """The same request through an HTTP API's named stage: its paths start ``/<stage>``."""
    context = event["requestContext"]
    http = {**context["http"], "path": f"/{stage}{context['http']['path']}"}
    return {
        **event,
        "rawPath": f"/{stage}{event['rawPath']}",
        "requestContext": {**context, "stage": stage, "http": http},
    }


def rest_v1(event: dict[str, Any], stage: str = "prod") -> dict[str, Any]:
    """The same request through a REST API's ``{proxy+}`` resource (payload 1.0)."""
    http = event["requestContext"]["http"]
    query = parse_qs(event.get("rawQueryString", ""), keep_blank_values=True)
    return {
        "resource": "/{proxy+}",
        "path": event["rawPath"],
        "httpMethod": http["method"],
        "headers": event["headers"],
        "multiValueHeaders": {k: [v] for k, v in event["headers"].items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": event["rawPath"].lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": http["method"],
            "path": f"/{stage}{event['rawPath']}",
            "stage": stage,
            "identity": {"sourceIp": http["sourceIp"]},
            "requestId": event["requestContext"]["requestId"],
        },
        "body": event.get("body"),
        "isBase64Encoded": event.get("isBase64Encoded", False),
    }


SHAPES = {
    "function-url": lambda event: event,
    "http-api-$default": http_api_default,
    "http-api-stage": http_api_stage,
    "rest-v1": rest_v1,
}


@pytest.mark.parametrize("path", EVENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sample_event_through_the_lambda_handler(path: Path, deployed, monkeypatch):
    module = path.parent.name
    # GIVEN the demo data, and only this module's function environment, as Lambda gives it
    seed_demo_data(deployed.env, dynamodb=boto3.resource("dynamodb"), sqs=boto3.client("sqs"))
    deployed.use_env(monkeypatch, FUNCTIONS[module])
    handler = importlib.reload(importlib.import_module(f"modules.{module}.handler")).handler

    event = json.loads(path.read_text())
    identity = event["headers"].get("x-relay-identity", "")
    if identity.startswith("unsigned:"):
        context = IdentityContext.model_validate_json(identity.removeprefix("unsigned:"))
        event["headers"]["x-relay-identity"] = TEST_IDENTITY_SIGNER.sign(context, audience=module)
    if event["requestContext"]["http"]["method"] == "POST":
        event["headers"]["idempotency-key"] = "sample-" + path.stem.replace(".", "-")
    expected = int(path.stem.rsplit(".", 1)[1])

    for shape, reshape in SHAPES.items():
        # WHEN the event arrives in this shape
        response = handler(reshape(event), LambdaContext())
        # THEN the route answers as the file says, with text bodies
        body = response.get("body") or ""
        assert not response["isBase64Encoded"], f"{shape}: JSON bodies go out as text"
        assert response["statusCode"] == expected, f"{shape}: {body}"
        if expected >= 400:
            problem = json.loads(body)
            assert problem["status"] == expected, shape
            assert problem["type"].startswith("urn:relay:problem:"), shape
