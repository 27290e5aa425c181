"""App versions through the real gateway app (the shipped route table, fake upstreams): an
app below the minimum is refused with 426 before any module is called, the minimum is
forwarded, a request without a version is served, a deprecated operation's answers carry
Deprecation, Sunset and Link also when a fallback gives them, and /metrics counts it all."""

from __future__ import annotations

import tomllib

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import UPSTREAMS

pytestmark = pytest.mark.anyio

DEPRECATED = {
    "since": "2026-11-01",
    "sunset": "2027-03-01",
    "link": "https://docs.relay.example/deprecations/message-list",
}
INBOX = {"items": [], "next_cursor": None}


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Modules(httpx.AsyncBaseTransport):
    """Every module answers 200, until ``down``: then the message module is unreachable."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        if self.down and request.url.host == "message.test":
            raise httpx.ConnectError("message is down")
        return httpx.Response(200, json=INBOX if request.url.host == "message.test" else {})


def shipped_table_with_the_inbox_deprecated(routes_file) -> RouteTable:
    """The shipped route table (its [app] block: 5.0 at least), with GET /message
    deprecated: a route whose reads have a fallback (the last-known-good copy)."""
    with open(routes_file, "rb") as fh:
        data = tomllib.load(fh)
    (message,) = [r for r in data["routes"] if r["prefix"] == "/message"]
    message["deprecated"] = {"GET": DEPRECATED}
    return RouteTable.from_dict(data, env=UPSTREAMS)


def by_app_version(text: str) -> dict[str, float]:
    return {
        s.labels["app_version"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "relay_gateway_requests_by_app_version_total"
    }


async def test_app_versions_are_checked_counted_and_deprecations_announced(settings, bearer):
    # GIVEN the gateway with the shipped table (min_version 5.0) and GET /message deprecated
    modules = Modules()
    app = create_app(
        settings,
        transport=modules,
        routes=shipped_table_with_the_inbox_deprecated(settings.routes_file),
    )
    driver = bearer(Role.DRIVER)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", timeout=5
    ) as client:
        # WHEN an app 4.9 asks for its loads
        old = await client.get("/loads", headers={**driver, "Relay-App-Version": "4.9.0"})
        # THEN 426 upgrade-required, naming the minimum, and loads was never asked
        assert old.status_code == 426
        assert old.headers["content-type"] == "application/problem+json"
        problem = old.json()
        assert problem["type"] == "urn:relay:problem:upgrade-required"
        assert "5.0 or newer" in problem["detail"] and "update the Relay app" in problem["detail"]
        assert problem["request_id"] == old.headers["x-request-id"]
        assert old.headers["relay-app-min-version"] == "5.0"
        assert modules.seen == []

        # WHEN the oldest supported app, and then a client without a version, ask
        oldest = await client.get("/loads", headers={**driver, "Relay-App-Version": "5.0.0"})
        unnamed = await client.get("/loads", headers=driver)
        # THEN both are forwarded
        assert (oldest.status_code, unnamed.status_code) == (200, 200)
        assert modules.seen == ["GET /loads", "GET /loads"]
        assert "deprecation" not in oldest.headers  # GET /loads is not deprecated

        # WHEN the app reads its inbox (deprecated) live, then while message is down
        app_52 = {**driver, "User-Agent": "RelayApp/5.2.0 (Android 14)"}
        live = await client.get("/message", headers=app_52)
        modules.down = True
        degraded = await client.get("/message", headers=app_52)
        # THEN both answers carry Deprecation, Sunset and Link; the second from the copy
        assert live.status_code == degraded.status_code == 200
        assert "relay-degraded" not in live.headers
        assert "fallback=last-known-good" in degraded.headers["relay-degraded"]
        for answer in (live, degraded):
            assert answer.headers["deprecation"] == "@1793491200"
            assert answer.headers["sunset"] == "Mon, 01 Mar 2027 00:00:00 GMT"
            assert answer.headers["link"] == (
                f'<{DEPRECATED["link"]}>; rel="deprecation"; type="text/html"'
            )
        # and so does the gateway's own refusal of that operation
        refused = await client.get("/message", headers={**driver, "Relay-App-Version": "4.2"})
        assert refused.status_code == 426
        assert refused.headers["deprecation"] == "@1793491200"

        # WHEN operators scrape the metrics
        scraped = await client.get("/metrics", headers=bearer(Role.OPS, None))
    # THEN each request is counted by its app version
    assert by_app_version(scraped.text) == {
        "older-than-min": 2.0,
        "5.0": 1.0,
        "none": 1.0,
        "5.2": 2.0,
    }
