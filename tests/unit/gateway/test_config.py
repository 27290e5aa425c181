"""Route table and settings are validated at start-up, not at 3 a.m."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from gateway.config import GatewaySettings
from gateway.resilience.retry import (
    DEFAULT_BUDGET_MIN_PER_SECOND,
    DEFAULT_BUDGET_RATIO,
    DEFAULT_BUDGET_WINDOW_SECONDS,
    BudgetConfig,
)
from gateway.routing.routes import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    RouteTable,
    RouteTableError,
)
from gateway.security.sigv4 import SigV4Auth
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import UPSTREAMS


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
                "modules": {"m": {"tier": "critical", "upstream": "http://m"}},
                "routes": [{"prefix": "/x", "module": "m"}],
            },
            "needs roles",
        ),
        ({"modules": {"m": {"tier": "vital", "upstream": "http://m"}}, "routes": []}, "tier"),
        ({"modules": {"m": {"tier": "critical", "upstream": "ftp://m"}}, "routes": []}, "http"),
        (
            {
                "modules": {
                    "m": {"tier": "critical", "upstream": "http://m", "timeout_seconds": 0}
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
            "modules": {"g": {"tier": "optional", "upstream": "http://g"}},
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


# --- every setting of routes.toml is validated (docs/resilience.md, "The route table") ---


def _table(module: dict | None = None, *routes: dict, tier: str = "optional") -> dict:
    return {
        "modules": {"m": {"tier": tier, "upstream": "http://m", **(module or {})}},
        "routes": list(routes) or [{"prefix": "/m", "module": "m", "roles": ["driver"]}],
    }


def _driver_route(**fallback: str) -> dict:
    return {"prefix": "/m", "module": "m", "roles": ["driver"], "fallback": fallback}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # upstream: one http(s) URL; the old list is refused by name
        (
            {"modules": {"m": {"tier": "optional", "upstreams": ["http://m"]}}},
            '"upstreams" is gone',
        ),
        ({"modules": {"m": {"tier": "optional"}}, "routes": []}, "module m: .*upstream"),
        (_table({"upstream": "m.internal:80"}), "not an http"),
        # unknown settings are typos, never ignored
        (_table({"timeout": 2.0}), "timeout"),
        (_table({"breaker": {"fail_max": 0}}), "fail_max"),
        (_table({"breaker": {"fail_maxx": 3}}), "fail_maxx"),
        (_table({"retry": {"max_attempts": 6}}), "max_attempts"),
        (_table({"bulkhead": {"max_concurrent": 0}}), "max_concurrent"),
        # deadlines that contradict each other
        (_table({"timeout_seconds": 1.0, "connect_timeout_seconds": 1.5}), "connect_timeout"),
        (_table({"timeout_seconds": 1.0, "breaker": {"slow_call_seconds": 1.0}}), "slow_call"),
        # the retry budget
        (_table({"retry_budget": {"ratio": 0}}), "retry_budget.ratio"),
        (_table({"retry_budget": {"ratio": 1.5}}), "retry_budget.ratio"),
        (_table({"retry_budget": {"window_seconds": 0}}), "retry_budget.window_seconds"),
        (_table({"retry_budget": {"min_per_second": -1}}), "retry_budget.min_per_second"),
        (_table({"retry_budget": {"share": 0.2}}), "retry_budget.share"),
        # a module nothing routes to
        (
            {
                "modules": {
                    "m": {"tier": "optional", "upstream": "http://m"},
                    "unused": {"tier": "optional", "upstream": "http://u"},
                },
                "routes": [{"prefix": "/m", "module": "m", "roles": ["driver"]}],
            },
            "module unused has no routes",
        ),
        # routes
        (_table(None, _driver_route(get="last-known-good")), "method 'get'"),
        (_table(None, _driver_route(GET="deferred")), "only writes can be deferred"),
        (
            _table(None, {"prefix": "/m", "module": "m", "auth": "none", "roles": ["driver"]}),
            "roles mean nothing",
        ),
        (
            _table(None, {"prefix": "/m", "module": "m", "auth": "none", "fallback": {"PUT": "x"}}),
            "anonymous writes cannot have a fallback",
        ),
        # tiers: what a driver keeps when the module fails
        (_table(None, _driver_route(POST="deferred"), tier="critical"), "its reads need"),
        (_table(None, _driver_route(GET="last-known-good"), tier="critical"), "its writes need"),
        (_table(None, _driver_route(POST="deferred"), tier="degradable"), "its reads need"),
        (_table(None, _driver_route(GET="last-known-good"), tier="deferrable"), "deferred"),
        (
            _table(None, _driver_route(POST="last-known-good"), tier="deferrable"),
            "must be deferred",
        ),
    ],
)
def test_a_bad_setting_is_refused_at_start_up(data, message):
    with pytest.raises(RouteTableError, match=message):
        RouteTable.from_dict(data, env={})


@pytest.mark.parametrize(
    ("tier", "fallback"),
    [
        ("critical", {"GET": "last-known-good", "POST": "deferred"}),
        ("degradable", {"GET": "static-directions"}),
        ("deferrable", {"POST": "deferred"}),
        ("optional", {}),
    ],
)
def test_each_tier_accepts_the_fallbacks_it_promises(tier, fallback):
    table = RouteTable.from_dict(_table(None, _driver_route(**fallback), tier=tier), env={})
    assert table.modules["m"].tier == tier


def test_tiers_bind_only_routes_drivers_call():
    # dispatch's route of a deferrable module needs no deferral; the driver's does
    data = _table(
        None,
        {"prefix": "/m", "module": "m", "roles": ["driver"], "fallback": {"POST": "deferred"}},
        {"prefix": "/dispatch/m", "module": "m", "roles": ["dispatch"]},
        tier="deferrable",
    )
    assert RouteTable.from_dict(data, env={}).match("/dispatch/m").roles == {Role.DISPATCH}


def test_settings_left_out_take_their_named_defaults():
    module = RouteTable.from_dict(_table(), env={}).modules["m"]
    assert module.timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert module.connect_timeout_seconds == DEFAULT_CONNECT_TIMEOUT_SECONDS
    assert module.retry_budget == BudgetConfig(
        ratio=DEFAULT_BUDGET_RATIO,
        min_per_second=DEFAULT_BUDGET_MIN_PER_SECOND,
        window_seconds=DEFAULT_BUDGET_WINDOW_SECONDS,
    )


def test_the_shipped_route_table_is_valid_and_names_one_upstream_per_module():
    table = RouteTable.load(GatewaySettings().routes_file, env=UPSTREAMS)
    assert {n: m.upstream for n, m in table.modules.items()} == {
        "loads": "http://loads.test",
        "gatepass": "http://gatepass.test",
        "navigate": "http://navigate.test",
        "message": "http://message.test",
    }
