"""Canary releases in the gateway: sticky routing by caller and release, each version's own
breaker, a failed canary call answered by the stable version, each call counted per version."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.release.router import BUCKETS, canary_bucket, on_canary
from gateway.release.state import Release
from gateway.release.stats import VersionStats, bucket, bucket_upper_ms
from gateway.routing.routes import RouteTable
from tests.unit.gateway.conftest import UPSTREAMS, identity_of

CANARY_URL = "http://loads-canary.test"
DRIVERS = [f"D-{n}" for n in range(2000, 2400)]


class MemoryReleases:
    """An in-memory release store (the control table's, in tests of the gateway alone)."""

    def __init__(self) -> None:
        self.items: dict[str, Release] = {}
        self.loads = 0

    def get(self, module: str) -> Release | None:
        return self.items.get(module)

    def load(self) -> dict[str, Release]:
        self.loads += 1
        return dict(self.items)

    def put(self, release: Release, *, expected_revision: int | None) -> Release | None:
        current = self.items.get(release.module)
        if (current.revision if current else None) != expected_revision:
            return None
        stored = replace(release, revision=(expected_revision or 0) + 1)
        self.items[release.module] = stored
        return stored


class MemoryStats:
    def __init__(self) -> None:
        self.added: dict[tuple[str, str], VersionStats] = {}

    def add(self, release_id: str, version: str, second: int, stats: VersionStats) -> None:
        key = (release_id, version)
        self.added[key] = self.added.get(key, VersionStats()).merged(stats)

    def window(self, release_id: str, version: str, start: float, end: float) -> VersionStats:
        return self.added.get((release_id, version), VersionStats())


def release(weight: float, **changes) -> Release:
    fields = {
        "module": "loads",
        "release_id": "loads-r1",
        "stable_version": "v1",
        "canary_version": "v2",
        "canary_url": CANARY_URL,
    }
    return Release(**(fields | {"weight": weight} | changes))


@pytest.fixture
def store() -> MemoryReleases:
    return MemoryReleases()


@pytest.fixture
def stats() -> MemoryStats:
    return MemoryStats()


@pytest.fixture
def gateway(settings, upstream, store, stats):
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    # counts leave only when a test flushes them (no background flush racing its asserts)
    settings = settings.model_copy(update={"release_stats_flush_seconds": 60})
    app = create_app(settings, routes=routes, release_store=store, stats_store=stats)
    with TestClient(app) as client:
        yield client


def refresh(gateway) -> None:
    gateway.app.state.releases.refresh()


def canary_drivers(weight: float, release_id: str = "loads-r1") -> list[str]:
    return [d for d in DRIVERS if canary_bucket(release_id, d) < weight * BUCKETS / 100]


# --- who goes to the canary --------------------------------------------------------------


def test_the_canary_share_is_the_weight_and_grows_without_moving_anyone_back():
    at_10 = set(canary_drivers(10))
    at_50 = set(canary_drivers(50))
    assert 0.06 < len(at_10) / len(DRIVERS) < 0.14
    assert 0.42 < len(at_50) / len(DRIVERS) < 0.58
    assert at_10 < at_50  # a driver on the canary at 10% is still on it at 50%
    assert set(canary_drivers(100)) == set(DRIVERS)
    assert canary_drivers(0) == []


def test_a_new_release_draws_a_new_share_of_drivers():
    assert set(canary_drivers(10, "loads-r1")) != set(canary_drivers(10, "loads-r2"))


def test_callers_without_an_identity_stay_on_the_stable_version():
    assert not on_canary(release(100), None)
    assert on_canary(release(100), "D-1")


# --- routing through the gateway ----------------------------------------------------------


def test_canary_drivers_reach_the_canary_and_the_others_the_stable_version(
    gateway, upstream, store, bearer
):
    stable = upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    canary = upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(10)
    refresh(gateway)
    on, off = canary_drivers(10)[:3], [d for d in DRIVERS if d not in canary_drivers(10)][:3]
    for _ in range(2):  # the same version on every request
        for driver in on + off:
            assert gateway.get("/loads", headers=bearer(driver_id=driver)).status_code == 200
    assert canary.call_count == 6 and stable.call_count == 6
    assert {identity_of(c.request, "loads").sub for c in canary.calls} == set(on)
    assert {identity_of(c.request, "loads").sub for c in stable.calls} == set(off)


def test_weight_zero_and_a_finished_release_send_everyone_to_the_stable_version(
    gateway, upstream, store, bearer
):
    stable = upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    canary = upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    driver = canary_drivers(50)[0]
    for state in (release(0), release(50, phase="rolled-back")):
        store.items["loads"] = state
        refresh(gateway)
        gateway.get("/loads", headers=bearer(driver_id=driver))
    assert canary.call_count == 0 and stable.call_count == 2


def test_a_promoted_release_with_a_stable_url_moves_the_stable_version_there(
    gateway, upstream, store, bearer
):
    old = upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    new = upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(0, phase="promoted", stable_version="v2", stable_url=CANARY_URL)
    refresh(gateway)
    gateway.get("/loads", headers=bearer(driver_id=DRIVERS[0]))
    assert new.call_count == 1 and old.call_count == 0


def test_a_failing_canary_opens_its_own_breaker_and_its_drivers_are_answered_by_stable(
    gateway, upstream, store, stats, bearer
):
    stable = upstream.get("http://loads.test/loads").respond(200, json={"items": ["live"]})
    upstream.get(f"{CANARY_URL}/loads").respond(500, json={"title": "broken"})
    store.items["loads"] = release(100)
    refresh(gateway)
    for driver in DRIVERS[:12]:
        r = gateway.get("/loads", headers=bearer(driver_id=driver))
        assert r.status_code == 200 and r.json() == {"items": ["live"]}
        assert "relay-degraded" not in r.headers  # live, from the stable version
    assert stable.call_count == 12
    state = gateway.app.state
    canary = state.releases.canaries["loads"]
    assert canary.breaker.state.value == "open"
    assert state.upstreams["loads"].breaker.state.value == "closed"
    assert state.forwarder.canary_retries["loads"] == 12
    counted = state.releases.stats.totals
    assert counted[("loads", "v2")].failures == 12
    assert counted[("loads", "v1")].calls == 12 and counted[("loads", "v1")].failures == 0


def test_a_4xx_from_the_canary_is_its_answer_not_a_failure(gateway, upstream, store, bearer):
    upstream.get("http://loads.test/loads/L-1").respond(200, json={})
    upstream.get(f"{CANARY_URL}/loads/L-1").respond(404, json={"title": "not found"})
    store.items["loads"] = release(100)
    refresh(gateway)
    r = gateway.get("/loads/L-1", headers=bearer(driver_id=DRIVERS[0]))
    assert r.status_code == 404
    assert gateway.app.state.releases.stats.totals[("loads", "v2")].failures == 0


def test_a_write_the_canary_failed_goes_to_stable_with_the_same_idempotency_key(
    gateway, upstream, store, bearer
):
    upstream.post(f"{CANARY_URL}/loads/L-1/events").mock(side_effect=httpx.ConnectError("down"))
    stable = upstream.post("http://loads.test/loads/L-1/events").respond(201, json={})
    store.items["loads"] = release(100)
    refresh(gateway)
    r = gateway.post(
        "/loads/L-1/events",
        json={"kind": "arrived"},
        headers={**bearer(driver_id=DRIVERS[0]), "idempotency-key": "k-12345678"},
    )
    assert r.status_code == 201
    assert stable.calls.last.request.headers["idempotency-key"] == "k-12345678"


def test_the_version_header_is_read_and_never_reaches_the_client(gateway, upstream, store, bearer):
    upstream.get(f"{CANARY_URL}/loads").respond(
        200, json={"items": []}, headers={"x-relay-version": "v2"}
    )
    store.items["loads"] = release(100)
    refresh(gateway)
    r = gateway.get("/loads", headers=bearer(driver_id=DRIVERS[0]))
    assert "x-relay-version" not in r.headers
    assert gateway.app.state.forwarder.versions_view() == {"loads@v2": 1}


def test_the_counts_reach_the_stats_store_when_flushed(gateway, upstream, store, stats, bearer):
    upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(50)
    refresh(gateway)
    for driver in DRIVERS[:40]:
        gateway.get("/loads", headers=bearer(driver_id=driver))
    gateway.app.state.releases.stats.flush()
    on = len(set(DRIVERS[:40]) & set(canary_drivers(50)))
    assert stats.added[("loads-r1", "v2")].calls == on
    assert stats.added[("loads-r1", "v1")].calls == 40 - on


def test_ops_status_shows_the_release_and_each_versions_calls(gateway, upstream, store, bearer):
    from shared_contracts.identity import Role

    upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(100)
    refresh(gateway)
    gateway.get("/loads", headers=bearer(driver_id=DRIVERS[0]))
    status = gateway.get("/ops/status", headers=bearer(Role.OPS, None)).json()
    shown = status["releases"]["loads"]
    assert shown["weight"] == 100 and shown["canary_version"] == "v2"
    assert shown["calls"]["v2"]["calls"] == 1
    assert shown["canary"]["breaker"]["state"] == "closed"


def test_a_store_that_fails_keeps_the_last_copy(gateway, upstream, store, bearer):
    upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(100)
    refresh(gateway)

    def broken() -> dict[str, Release]:
        raise RuntimeError("control table down")

    store.load = broken  # type: ignore[method-assign]
    releases = gateway.app.state.releases
    releases.copy.started_at = float("-inf")  # due a refresh on the next request
    assert gateway.get("/loads", headers=bearer(driver_id=DRIVERS[0])).status_code == 200
    assert releases.routing["loads"].weight == 100


# --- the histogram ------------------------------------------------------------------------


def test_latency_buckets_bound_each_latency_within_20_percent():
    for ms in (0.1, 0.6, 3.0, 47.0, 190.0, 2000.0):
        upper = bucket_upper_ms(bucket(ms))
        assert ms <= upper * 1.000001 and (bucket(ms) == 0 or upper < ms * 1.2 + 1e-9)


def test_p99_comes_from_the_summed_histogram():
    fast, slow = VersionStats(), VersionStats()
    for _ in range(99):
        fast.add(True, 10)
    slow.add(False, 600)
    both = fast.merged(slow)
    assert both.calls == 100 and both.failures == 1 and both.success_rate == 0.99
    assert both.percentile(0.99) == pytest.approx(bucket_upper_ms(bucket(10)))
    assert both.percentile(1.0) == pytest.approx(bucket_upper_ms(bucket(600)))
    assert VersionStats().percentile(0.99) is None and VersionStats().success_rate is None


# --- picking up a change ------------------------------------------------------------------


class Upstream:
    """Stands in for a ModuleUpstream: what Releases reads and moves."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def rebase(self, url: str) -> None:
        self.base_url = url


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_a_change_in_the_store_is_followed_within_the_refresh_period(store):
    from gateway.release.router import DEFAULT_REFRESH_SECONDS, Releases

    now = [100.0]
    stable = Upstream("http://loads.test")
    releases = Releases(
        store,
        {"loads": stable},  # type: ignore[dict-item]
        lambda module, version, url: Upstream(url),  # type: ignore[arg-type,return-value]
        clock=lambda: now[0],
    )
    releases.refresh()
    driver = canary_drivers(50)[0]
    store.items["loads"] = release(50)  # the controller's next step
    assert releases.choose("loads", driver)[0] is stable  # not yet due: the last copy
    now[0] += DEFAULT_REFRESH_SECONDS  # due: this request starts a read in the background
    assert releases.choose("loads", driver)[0] is stable
    assert releases.copy.refreshing is not None
    await releases.copy.refreshing
    upstream, current = releases.choose("loads", driver)
    assert upstream.base_url == CANARY_URL and current is not None and current.weight == 50
    assert DEFAULT_REFRESH_SECONDS <= 1.0  # every instance follows within ~1 s plus one read


@pytest.mark.anyio
async def test_a_fresh_lambda_environment_routes_its_first_request_by_the_stored_release(
    settings, upstream, store, stats, bearer
):
    # No start-up step in Lambda (Mangum runs with lifespan off): the first request reads.
    canary = upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    store.items["loads"] = release(100)
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
        release_store=store,
        stats_store=stats,
    )
    assert not app.state.releases.loaded
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/loads", headers=bearer(driver_id=DRIVERS[0]))
    assert r.status_code == 200 and canary.call_count == 1
    assert store.loads == 1 and app.state.releases.loaded


def test_a_canary_probe_is_waited_for_and_a_failed_one_is_answered_live_by_stable(
    settings, upstream, store, stats, bearer
):
    # A probe slower than the breaker's patience: a plain caller with a cached copy would
    # get the copy; a canary driver gets the stable version's live answer.
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    loads = routes.modules["loads"]
    impatient = loads.breaker.model_copy(update={"probe_patience_seconds": 0.001})
    modules = {**routes.modules, "loads": loads.model_copy(update={"breaker": impatient})}
    routes = RouteTable(modules, routes.routes)

    async def slow_failure(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)  # outlasts the 1 ms patience
        return httpx.Response(500)

    upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    upstream.get(f"{CANARY_URL}/loads").mock(side_effect=slow_failure)
    app = create_app(settings, routes=routes, release_store=store, stats_store=stats)
    with TestClient(app) as gateway:
        auth = bearer(driver_id=DRIVERS[0])
        assert gateway.get("/loads", headers=auth).status_code == 200  # a copy is kept
        store.items["loads"] = release(100)
        refresh(gateway)
        canary = gateway.app.state.releases.canaries["loads"]
        canary.breaker.follow_open("test", opened_seconds_ago=3600)  # reset period over
        assert canary.breaker.would_probe()
        r = gateway.get("/loads", headers=auth)
        assert r.status_code == 200 and r.json() == {"items": []}
        assert "relay-degraded" not in r.headers  # live from stable, not the kept copy


def test_a_promotion_starts_the_stable_versions_breaker_afresh(gateway, upstream, store, bearer):
    # The old process was stopped a moment before this instance read the promotion: its
    # failures opened the breaker, but they were the old version's, not the promoted one's.
    new = upstream.get(f"{CANARY_URL}/loads").respond(200, json={"items": []})
    stable = gateway.app.state.upstreams["loads"]
    stable.breaker.follow_open("the old process is gone")
    store.items["loads"] = release(0, phase="promoted", stable_version="v2", stable_url=CANARY_URL)
    refresh(gateway)
    assert stable.breaker.state.value == "closed"
    assert gateway.get("/loads", headers=bearer(driver_id=DRIVERS[0])).status_code == 200
    assert new.call_count == 1
