"""Module URLs follow what the modules' stacks publish in SSM, without slowing requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from gateway.routing.directory import ModuleDirectory, url_parameter
from gateway.routing.routes import RouteTable
from tests.fakes import MonotonicClock
from tests.unit.gateway.conftest import UPSTREAMS


class Upstream:
    def __init__(self, url: str) -> None:
        self.base_url = url
        self.rebased: list[str] = []

    def rebase(self, url: str) -> None:
        self.base_url = url
        self.rebased.append(url)


class FakeSsm:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls = 0
        self.error: Exception | None = None

    def get_parameters(self, Names: list[str]) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {
            "Parameters": [{"Name": n, "Value": self.values[n]} for n in Names if n in self.values],
            "InvalidParameters": [n for n in Names if n not in self.values],
        }


def directory(
    ssm: FakeSsm, clock: MonotonicClock | None = None, **upstreams: Upstream
) -> ModuleDirectory:
    return ModuleDirectory(
        "/relay/prod/", upstreams, ssm=ssm, clock=clock or MonotonicClock(), refresh_seconds=60
    )


def test_the_parameter_name_follows_the_stacks_scheme():
    assert url_parameter("/relay/prod/", "loads") == "/relay/prod/loads/url"
    assert url_parameter("/relay/prod", "loads") == "/relay/prod/loads/url"


def test_a_changed_url_rebases_only_that_upstream():
    loads, navigate = Upstream("https://old.example"), Upstream("https://nav.example")
    ssm = FakeSsm(
        {
            "/relay/prod/loads/url": "https://new.example/",
            "/relay/prod/navigate/url": "https://nav.example/",
        }
    )
    directory(ssm, loads=loads, navigate=navigate).refresh()
    assert loads.rebased == ["https://new.example"]  # the function URL's trailing / dropped
    assert navigate.rebased == []


def test_a_missing_or_malformed_parameter_keeps_the_last_url(caplog):
    loads, gatepass = Upstream("https://loads.example"), Upstream("https://gp.example")
    ssm = FakeSsm({"/relay/prod/gatepass/url": "ftp://nope"})
    with caplog.at_level(logging.ERROR):
        directory(ssm, loads=loads, gatepass=gatepass).refresh()
    assert (loads.base_url, gatepass.base_url) == ("https://loads.example", "https://gp.example")
    assert "does not exist" in caplog.text and "not http(s)" in caplog.text


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def settled(read: asyncio.Future[None] | None) -> None:
    assert read is not None, "a read was started"
    await asyncio.gather(read, return_exceptions=True)


@pytest.mark.anyio
async def test_reads_run_in_the_background_once_per_period():
    loads = Upstream("https://old.example")
    ssm = FakeSsm({"/relay/prod/loads/url": "https://new.example"})
    clock = MonotonicClock()
    d = directory(ssm, clock, loads=loads)
    read = d.keep_current()
    assert loads.base_url == "https://old.example", "the request does not wait for SSM"
    await settled(read)
    assert (ssm.calls, loads.base_url) == (1, "https://new.example")
    ssm.values["/relay/prod/loads/url"] = "https://newer.example"
    clock.now += 59
    assert d.keep_current() is None, "not again within the period"
    clock.now += 1
    await settled(d.keep_current())
    assert (ssm.calls, loads.base_url) == (2, "https://newer.example")


@pytest.mark.anyio
async def test_ssm_down_keeps_the_last_urls(caplog):
    loads = Upstream("https://loads.example")
    ssm = FakeSsm({})
    ssm.error = RuntimeError("ssm is down")
    d = directory(ssm, loads=loads)
    with caplog.at_level(logging.ERROR):
        await settled(d.keep_current())
    assert loads.base_url == "https://loads.example"
    assert "could not read module URLs" in caplog.text


@pytest.mark.parametrize("ssm_path", [None, "/relay/prod/"])
def test_the_app_reads_ssm_only_when_the_stage_publishes_urls(ssm_path, settings):
    from gateway.app import create_app

    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    app = create_app(settings.model_copy(update={"ssm_path": ssm_path}), routes=routes)
    directory = app.state.forwarder.directory
    if ssm_path is None:
        assert directory is None
    else:
        assert set(directory.names) == {f"/relay/prod/{m}/url" for m in app.state.upstreams}
        assert directory.upstreams is app.state.upstreams
