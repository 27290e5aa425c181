"""``relay lever list|pull|release`` against a gateway's operator API (the gateway app
in-process, an in-memory lever store): the tables it prints, the exit codes of a refusal,
and the operator named in the audit."""

from __future__ import annotations

import re

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.routing.routes import RouteTable
from relay import levers as lever_cli
from relay.cli import app as cli
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS
from tests.unit.gateway.lever_fakes import FakeLeverStore

GATEWAY = "http://gateway.test"


@pytest.fixture
def store() -> FakeLeverStore:
    return FakeLeverStore()


@pytest.fixture
def relay(settings, store, monkeypatch):
    """Runs ``relay lever ...`` against the gateway app; its answers come from the app."""
    monkeypatch.setattr(
        lever_cli,
        "_headers",
        lambda who: {"authorization": "Bearer " + ISSUER.mint(who or "ops-x", Role.OPS, None)},
    )
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    with (
        TestClient(create_app(settings, routes=routes, lever_store=store)) as gateway,
        respx.mock(assert_all_called=False) as mock,
    ):

        def answer(request: httpx.Request) -> httpx.Response:
            r = gateway.request(
                request.method,
                request.url.raw_path.decode(),
                headers=dict(request.headers),
                content=request.content,
            )
            return httpx.Response(r.status_code, headers=r.headers, content=r.content)

        mock.route(host="gateway.test").mock(side_effect=answer)

        def run(*args: str):
            return CliRunner().invoke(cli, ["lever", *args, "--gateway", GATEWAY])

        yield run


def test_pull_list_and_release(relay, store):
    pulled = relay("pull", "shed", "optional", "--reason", "surge", "--ttl", "600", "--who", "kim")
    assert pulled.exit_code == 0, pulled.output
    assert "shed:optional" in pulled.output
    assert re.search(r"(9 min 5\d|10 min 00) s", pulled.output)  # --ttl 600, real clock
    assert store.items["shed:optional"].who == "kim"
    listed = relay("list")
    assert listed.exit_code == 0 and "shed:optional" in listed.output and "surge" in listed.output
    released = relay("release", "shed:optional", "--reason", "calm", "--who", "lee")
    assert released.exit_code == 0, released.output
    assert store.trail[0].action == "release" and store.trail[0].who == "lee"
    assert "levers in force (0)" in relay("list").output


def test_a_refusal_exits_2_and_says_the_rule(relay, store):
    refused = relay("pull", "shed", "critical", "--reason", "r")
    assert refused.exit_code == 2 and "critical-never-shed" in refused.output
    unknown = relay("pull", "fallback", "billing", "--reason", "r")
    assert unknown.exit_code == 2 and "no module" in unknown.output
    assert relay("release", "pause:notifications").exit_code == 2
    assert store.items == {}
