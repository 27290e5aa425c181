"""Route table and settings are validated at start-up, not at 3 a.m."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.routes import RouteTable, RouteTableError
from gateway.sigv4 import SigV4Auth


def test_missing_upstream_variable_is_refused():
    with pytest.raises(RouteTableError, match="RELAY_UPSTREAM_LOADS"):
        RouteTable.load(GatewaySettings().routes_file, env={})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"modules": {}, "routes": [{"prefix": "/x", "module": "nope", "roles": ["driver"]}]},
            "unknown module",
        ),
        (
            {
                "modules": {"m": {"tier": "critical", "upstreams": ["http://m"]}},
                "routes": [{"prefix": "/x", "module": "m"}],
            },
            "needs roles",
        ),
        ({"modules": {"m": {"tier": "vital", "upstreams": ["http://m"]}}, "routes": []}, "tier"),
        ({"modules": {"m": {"tier": "critical", "upstreams": ["ftp://m"]}}, "routes": []}, "http"),
        (
            {
                "modules": {
                    "m": {"tier": "critical", "upstreams": ["http://m"], "timeout_seconds": 0}
                },
                "routes": [],
            },
            "timeout_seconds",
        ),
    ],
)
def test_invalid_route_tables_are_refused(data, message):
    with pytest.raises(RouteTableError, match=message):
        RouteTable.from_dict(data, env={})


def test_longest_prefix_wins():
    table = RouteTable.from_dict(
        {
            "modules": {"g": {"tier": "critical", "upstreams": ["http://g"]}},
            "routes": [
                {"prefix": "/gatepass", "module": "g", "roles": ["driver"]},
                {"prefix": "/gatepass/verify", "module": "g", "roles": ["gate"]},
            ],
        },
        env={},
    )
    assert table.match("/gatepass/verify").prefix == "/gatepass/verify"
    assert table.match("/gatepass/P-1").prefix == "/gatepass"
    assert table.match("/gatepassX") is None


def test_local_shortcuts_are_refused_outside_local_stages():
    with pytest.raises(ValidationError, match="https:// JWKS"):
        GatewaySettings(stage="prod", jwks_url="file:///tmp/jwks.json")
    with pytest.raises(ValidationError, match="from a secret"):
        GatewaySettings(stage="prod", identity_signing_key="-----BEGIN PRIVATE KEY-----")


def test_upstream_calls_can_be_sigv4_signed():
    from botocore.credentials import Credentials

    auth = SigV4Auth("eu-west-1", credentials=Credentials("AKIDEXAMPLE", "secret", "token"))
    request = httpx.Request("GET", "https://abc.lambda-url.eu-west-1.on.aws/loads")
    signed = next(auth.auth_flow(request))
    assert signed.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/lambda/aws4_request" in signed.headers["authorization"]
    assert signed.headers["x-amz-security-token"] == "token"
