"""Breakers across the fleet: several gateway apps in one process sharing one breaker store.

The store here is an in-memory one with the control table's conditions
(:class:`MemoryBreakerStore`; the unit tier does not import moto); tests/functional runs
the same scenarios on ``ControlTableBreakers`` over moto. Each app is ``create_app(...)``
with its own memory; requests go round-robin across them; clocks are injected (a request
that reaches the black-holed module waits the module's real deadline, 50 ms here).

Measured with 8 instances, ``fail_max`` 5, one request every 0.25 s fleet-wide, refresh
every 0.5 s: with the shared state switched off, every one of the 40 requests sent waits
the full deadline (each instance needs its own 5 failures: 8 x 5 = 40); with it on, 5 do
(the fleet's fifth failure in a row opens it) and every instance fails fast within 0.5 s
of the first opening. With requests alone refreshing the copies (Lambda environments are
frozen between invocations), a request whose copy is due a refresh waits for it (at most
``refresh_wait_seconds``) before its breaker decides: 5 again, each other instance failing
fast from its first request after the opening (the last one 1.75 s after it). Before
requests waited for it, each other instance's first request after the opening still
waited the deadline: 12 (5 + 7).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace

import httpx
import pytest

from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.resilience.breaker import BreakerState, CircuitBreaker
from gateway.resilience.fleet import BreakerStore, FleetBreakers, FleetRecord
from gateway.routing.routes import RouteTable
from shared_contracts.identity import Role
from tests.fakes import FakeSleep, MonotonicClock, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS

pytestmark = pytest.mark.anyio

INSTANCES = 8
FAIL_MAX = 5
STEP_SECONDS = 0.25  # between two requests, fleet-wide
DEADLINE_SECONDS = 0.05  # real: a black-holed request waits this long


@pytest.fixture
def anyio_backend():
    return "asyncio"


class MemoryBreakerStore:
    """The control table's breaker items in memory, with its conditional writes."""

    def __init__(self) -> None:
        self.items: dict[str, FleetRecord] = {}
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def load(self) -> dict[str, FleetRecord]:
        with self.lock:
            self.calls["load"] += 1
            return dict(self.items)

    def add_failure(self, module: str, now: float, window: float) -> FleetRecord:
        with self.lock:
            self.calls["add_failure"] += 1
            item = self.items.get(module, FleetRecord(module))
            recent = item.last_failure_at is not None and item.last_failure_at >= now - window
            item = replace(item, failures=item.failures + 1 if recent else 1, last_failure_at=now)
            self.items[module] = item
            return item

    def reset_failures(self, module: str, now: float) -> None:
        with self.lock:
            self.calls["reset_failures"] += 1
            item = self.items.get(module)
            if item is not None and item.failures > 0:
                self.items[module] = replace(item, failures=0)

    def open(
        self, module: str, by: str, now: float, until: float, reason: str, reopen: bool
    ) -> bool:
        with self.lock:
            self.calls["open"] += 1
            item = self.items.get(module, FleetRecord(module))
            free = item.opened_at is None or (
                item.until is not None
                and item.until < now
                and (item.probe_until is None or item.probe_until < now)
            )
            if not (free or (reopen and item.probe_by == by)):
                return False
            self.items[module] = replace(
                item,
                opened_by=by,
                opened_at=now,
                until=until,
                reason=reason,
                probe_by=None,
                probe_until=None,
            )
            return True

    def lease_probe(self, module: str, by: str, opened_at: float, now: float, until: float) -> bool:
        with self.lock:
            self.calls["lease_probe"] += 1
            item = self.items.get(module)
            if (
                item is None
                or item.opened_at != opened_at
                or item.until is None
                or item.until > now
                or (item.probe_until is not None and item.probe_until >= now)
            ):
                return False
            self.items[module] = replace(item, probe_by=by, probe_until=until)
            return True

    def close(self, module: str, opened_at: float) -> bool:
        with self.lock:
            self.calls["close"] += 1
            item = self.items.get(module)
            if item is None or item.opened_at != opened_at:
                return False
            del self.items[module]
            return True


class StalledStore(MemoryBreakerStore):
    """Answers every call after ``delay`` real seconds, far past the fleet's deadline, and
    what it answers would open every breaker: a late answer must never count."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def load(self) -> dict[str, FleetRecord]:
        time.sleep(self.delay)
        self.calls["load"] += 1
        return {
            "loads": FleetRecord(
                "loads", opened_by="nobody", opened_at=0.0, until=9e9, reason="a late answer"
            )
        }

    def add_failure(self, module: str, now: float, window: float) -> FleetRecord:
        time.sleep(self.delay)
        return FleetRecord(module, failures=1000, last_failure_at=now)

    def open(self, *args: object) -> bool:
        time.sleep(self.delay)
        return True


class Module(httpx.AsyncBaseTransport):
    """The loads module behind every instance: black-holed (never answers; the deadline
    ends the wait), healthy, or failing one call in ``fail_every``."""

    def __init__(self) -> None:
        self.black_hole = True
        self.fail_every = 0
        self.reached = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.reached += 1
        if self.black_hole:
            await asyncio.Event().wait()
        if self.fail_every and self.reached % self.fail_every == 0:
            return httpx.Response(500, json={"detail": "boom"})
        return httpx.Response(200, json={"items": []})


@dataclass
class Fleet:
    """``INSTANCES`` gateway apps, one store, the same clocks (one machine's time)."""

    mono: MonotonicClock
    wall: WallClock
    module: Module
    clients: list[httpx.AsyncClient]
    fleets: list[FleetBreakers]
    breakers: list[CircuitBreaker]
    idle_refresh: bool  # False: requests alone refresh (Lambda: frozen between them)
    sent: int = 0

    async def request(self) -> httpx.Response:
        """The next request, round-robin; then time passes, and each instance's background
        loop refreshes its copy when due (what ``FleetBreakers._loop`` does while a process
        is idle), and every store call in flight lands."""
        client = self.clients[self.sent % len(self.clients)]
        self.sent += 1
        response = await client.get("/loads", headers=DRIVER)
        await self.settle()
        self.mono.advance(STEP_SECONDS)
        self.wall.advance(STEP_SECONDS)
        if self.idle_refresh:
            for fleet in self.fleets:
                fleet.tick()
        await self.settle()
        return response

    async def settle(self) -> None:
        await asyncio.gather(*(fleet.idle() for fleet in self.fleets))

    def states(self) -> list[BreakerState]:
        return [b.state for b in self.breakers]

    def opened_at(self) -> list[float]:
        """When each instance's breaker first opened (its events; the monotonic clock)."""
        return [
            next(e.at for e in b.events.recent if e.to_state is BreakerState.OPEN)
            for b in self.breakers
        ]


DRIVER = {"authorization": "Bearer " + ISSUER.mint("D-1001", Role.DRIVER, "D-1001")}
OPS = {"authorization": "Bearer " + ISSUER.mint("ops-1", Role.OPS, None)}


def loads_table(settings: GatewaySettings, reset_timeout: float) -> RouteTable:
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    overrides = {
        "timeout_seconds": DEADLINE_SECONDS,
        "connect_timeout_seconds": DEADLINE_SECONDS,
        "breaker": {
            "fail_max": FAIL_MAX,
            "reset_timeout_seconds": reset_timeout,
            "slow_call_seconds": DEADLINE_SECONDS * 0.8,
        },
        "retry": {"max_attempts": 1},
    }
    data = {
        "modules": {
            n: {
                **m.model_dump(exclude={"name"}),
                **(overrides if n == "loads" else {}),
                "breaker": {
                    **m.breaker.model_dump(),
                    **(overrides["breaker"] if n == "loads" else {}),  # type: ignore[dict-item]
                },
            }
            for n, m in table.modules.items()
        },
        "routes": [r.model_dump() for r in table.routes],
    }
    return RouteTable.from_dict(json.loads(json.dumps(data, default=list)), env={})


async def parked(seconds: float) -> None:
    """The background loop's sleep in the tests: it never wakes (``Fleet.request`` moves
    time and ticks each instance, as the loop would while the process is idle)."""
    await asyncio.Event().wait()


def build_fleet(
    settings: GatewaySettings,
    store: BreakerStore | None,
    *,
    reset_timeout: float = 60.0,
    store_timeout: float = 5.0,
    idle_refresh: bool = True,
    refresh_wait: float = 1.0,
) -> Fleet:
    """``store`` None: the shared state switched off (each instance decides alone).
    ``idle_refresh`` False: requests alone refresh the copies, and wait for a due refresh
    at most ``refresh_wait`` real seconds (generous here: the store answers in
    microseconds, and the machine may be busy)."""
    mono, wall, module = MonotonicClock(), WallClock(), Module()
    table = loads_table(settings, reset_timeout)
    clients, fleets, breakers = [], [], []
    for i in range(INSTANCES):
        fleet = (
            FleetBreakers(
                store,
                instance=f"gw-{i}",
                clock=wall,
                store_timeout_seconds=store_timeout,
                refresh_wait_seconds=refresh_wait,
                sleep=parked if idle_refresh else None,
            )
            if store is not None
            else None
        )
        app = create_app(
            settings,
            routes=table,
            transport=module,
            clock=mono,
            wall_clock=wall,
            sleep=FakeSleep(mono),
            fleet=fleet,
        )
        clients.append(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        )
        breakers.append(app.state.upstreams["loads"].breaker)
        if fleet is not None:
            fleets.append(fleet)
    return Fleet(mono, wall, module, clients, fleets, breakers, idle_refresh)


async def black_hole_outage(fleet: Fleet, requests: int = INSTANCES * FAIL_MAX) -> int:
    """Send ``requests`` round-robin to a black-holed module: how many waited its deadline."""
    fleet.module.black_hole = True
    for _ in range(requests):
        response = await fleet.request()
        assert response.status_code == 503
    return fleet.module.reached


async def test_without_shared_state_every_instance_pays_its_own_round_of_deadlines(settings):
    # GIVEN 8 instances that each decide alone (the store switched off)
    fleet = build_fleet(settings, store=None)
    # WHEN loads is black-holed for 40 requests round-robin
    waited = await black_hole_outage(fleet)
    # THEN every one of them waited the full deadline: 8 x fail_max
    assert waited == INSTANCES * FAIL_MAX
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES


async def test_with_shared_state_the_fleet_opens_on_its_failures_together(settings):
    # GIVEN 8 instances sharing one store
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store)
    # WHEN loads is black-holed for the same 40 requests
    waited = await black_hole_outage(fleet)
    # THEN at most 2 x fail_max requests waited the full deadline (not 8 x fail_max)
    assert FAIL_MAX <= waited <= 2 * FAIL_MAX
    # AND every instance fails fast, within 2 s of the first opening anywhere
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES
    opened = fleet.opened_at()
    assert max(opened) - min(opened) <= 2.0
    # AND one opening is published, by the instance that saw the fifth failure in a row
    (record,) = store.items.values()
    assert record.opened_by == "gw-4" and record.reason == "5 failures in a row across the fleet"
    assert record.until == record.opened_at + 60
    # AND the others' breakers record whom they followed
    follower = fleet.breakers[0].events.last
    assert follower is not None and follower.reason.startswith("opened fleet-wide by gw-4")


async def test_with_requests_alone_refreshing_the_fleet_opens_after_its_fail_max(settings):
    # GIVEN instances that refresh only when a request comes (a Lambda environment is
    # frozen between invocations: no loop runs while it is idle)
    fleet = build_fleet(settings, MemoryBreakerStore(), idle_refresh=False)
    # WHEN loads is black-holed for the same 40 requests
    waited = await black_hole_outage(fleet)
    # THEN the fleet's fifth failure in a row opens it, and each other instance's first
    # request after that waits for its due refresh, sees the opening and fails fast: only
    # fail_max requests waited the full deadline (before: fail_max + 7; alone: 8 x fail_max)
    assert waited == FAIL_MAX
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES
    # AND each instance opened on its first request after the opening: the last one
    # 7 requests (1.75 s) later, the time its first request came
    opened = fleet.opened_at()
    assert max(opened) - min(opened) == (INSTANCES - 1) * STEP_SECONDS
    assert all(f.store_errors == {} for f in fleet.fleets)


class GatedStore(MemoryBreakerStore):
    """Its loads wait until ``gate`` is set (a store that hangs), then answer, or raise
    with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.error = error

    def load(self) -> dict[str, FleetRecord]:
        self.gate.wait()
        if self.error is not None:
            raise self.error
        return super().load()


OPENED_ELSEWHERE = FleetRecord(
    "loads", opened_by="gw-x", opened_at=0.0, until=9e9, reason="5 failures in a row"
)


async def test_concurrent_requests_share_one_refresh_and_all_see_its_opening(settings):
    # GIVEN a Lambda-mode instance, warmed by one live request (its copy loaded once)
    store = GatedStore()
    store.gate.set()
    fleet = build_fleet(settings, store, idle_refresh=False, refresh_wait=5.0)
    fleet.module.black_hole = False
    client = fleet.clients[0]
    assert (await client.get("/loads", headers=DRIVER)).status_code == 200
    # AND then loads opened elsewhere, the copy due a refresh, the store's load held
    store.items["loads"] = replace(OPENED_ELSEWHERE, opened_at=fleet.wall())
    fleet.wall.advance(STEP_SECONDS * 2)
    store.gate.clear()
    shared = fleet.fleets[0]
    waiting = 0
    refresh_if_due = shared.refresh_if_due

    async def counted() -> None:
        nonlocal waiting
        waiting += 1
        await refresh_if_due()

    shared.refresh_if_due = counted  # type: ignore[method-assign]
    # WHEN 6 requests come to it at once, and the load answers once all are waiting
    requests = [asyncio.ensure_future(client.get("/loads", headers=DRIVER)) for _ in range(6)]
    for _ in range(10_000):  # each request's steps up to the breaker: a few loop turns
        if waiting == len(requests):
            break
        await asyncio.sleep(0)
    assert waiting == len(requests) and not any(r.done() for r in requests)
    store.gate.set()
    answers = await asyncio.gather(*requests)
    # THEN one load served all six, and every one of them failed fast on its opening
    assert store.calls["load"] == 2  # the warm-up's, and this one
    # (the warm-up's answer, kept by the route's fallback, answers for the module)
    assert all("relay-degraded" in a.headers for a in answers)
    assert fleet.module.reached == 1  # the warm-up only
    assert fleet.breakers[0].state is BreakerState.OPEN


@pytest.mark.parametrize("error", [None, ConnectionError("store unreachable")])
async def test_a_hung_or_failing_store_costs_a_lambda_request_at_most_the_short_wait(
    settings, caplog, error
):
    # GIVEN Lambda-mode instances whose store hangs (its calls time out after 1 s) or
    # fails, and whose late answers would say loads is open; loads itself is healthy
    store = GatedStore(error)
    wait = 0.02
    fleet = build_fleet(settings, store, idle_refresh=False, store_timeout=1.0, refresh_wait=wait)
    store.items["loads"] = replace(OPENED_ELSEWHERE, opened_at=fleet.wall())
    fleet.module.black_hole = False
    if error is not None:
        store.gate.set()
    # WHEN each instance gets two requests (the first one's copy is due a refresh)
    took = []
    for client in fleet.clients * 2:
        started = time.perf_counter()
        response = await client.get("/loads", headers=DRIVER)
        took.append(time.perf_counter() - started)
        # THEN each one is answered live: no breaker opened
        assert response.status_code == 200 and "relay-degraded" not in response.headers
    # AND none waited for the store longer than the short wait (with margin for a busy
    # machine), far less than the store's own 1 s deadline
    assert max(took) < 0.5
    await fleet.settle()  # the hung loads reach their 1 s deadline
    store.gate.set()
    # AND each instance's failed load was counted and logged, and changed nothing
    assert fleet.states() == [BreakerState.CLOSED] * INSTANCES
    assert all(f.store_errors == {"load": 1} for f in fleet.fleets)
    assert "breaker store: load for all modules failed" in caplog.text


async def test_one_prober_fleet_wide_and_its_success_closes_every_instance(settings):
    # GIVEN the fleet opened on a black-holed loads (reset timeout 5 s, not over yet)
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store, reset_timeout=5.0)
    await black_hole_outage(fleet, requests=2 * INSTANCES)
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES
    # WHEN loads is back, past the reset timeout, requests go on round-robin
    fleet.module.black_hole = False
    reached_before = fleet.module.reached
    fleet.mono.advance(5.0)
    fleet.wall.advance(5.0)
    answers = [await fleet.request() for _ in range(3 * INSTANCES)]
    # THEN exactly one instance probed the module (the lease's holder), its probe closed
    # the breaker fleet-wide and every instance is closed and live again
    probers = [b for b in fleet.breakers if b.transitions["open->half-open"]]
    assert len(probers) == 1
    assert fleet.states() == [BreakerState.CLOSED] * INSTANCES
    assert store.items == {} and store.calls["close"] == 1
    assert answers[-1].status_code == 200 and "relay-degraded" not in answers[-1].headers
    followers = [b for b in fleet.breakers if b is not probers[0]]
    assert all(b.transitions["open->closed"] == 1 for b in followers)
    # AND every request after the probe reached the module: none was held back
    live = sum(1 for a in answers if a.status_code == 200)
    assert fleet.module.reached - reached_before == live


async def test_a_failed_probe_opens_it_again_fleet_wide_for_another_period(settings):
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store, reset_timeout=5.0)
    await black_hole_outage(fleet, requests=2 * INSTANCES)
    first = store.items["loads"]
    fleet.mono.advance(5.0)
    fleet.wall.advance(5.0)
    reached = fleet.module.reached
    # WHEN the module is still black-holed past the reset timeout
    for _ in range(INSTANCES):
        await fleet.request()
    # THEN one probe went to it, failed, and its prober opened it again for all
    assert fleet.module.reached - reached == 1
    again = store.items["loads"]
    assert again.opened_at is not None and first.opened_at is not None
    assert again.opened_at > first.opened_at and again.probe_by is None
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES


async def test_a_stalled_store_never_opens_a_breaker_on_a_healthy_module(settings, caplog):
    # GIVEN a store that answers every call 0.2 s late (deadline 20 ms), with answers that
    # would open every breaker, and a module that fails one call in 3 (never 5 in a row)
    store = StalledStore(delay=0.2)
    fleet = build_fleet(settings, store, store_timeout=0.02)
    fleet.module.black_hole = False
    fleet.module.fail_every = 3
    live = 0
    for _ in range(6 * INSTANCES):
        response = await fleet.request()
        live += response.status_code == 200 and "relay-degraded" not in response.headers
    # THEN no breaker opened; the live answers were served; the store's misses were counted
    assert fleet.states() == [BreakerState.CLOSED] * INSTANCES
    assert live == 6 * INSTANCES - 2 * INSTANCES  # every call but the module's own failures
    assert all(b.transitions == {} for b in fleet.breakers)
    errors = Counter()
    for f in fleet.fleets:
        errors.update(f.store_errors)
    assert errors["load"] >= INSTANCES and errors["count"] >= 1
    assert "the local breakers decide alone" in caplog.text


async def test_a_closed_breaker_asks_the_store_nothing_per_request(settings):
    # GIVEN a healthy module, a fleet store, and time standing still
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store)
    fleet.module.black_hole = False
    for client in fleet.clients:
        for _ in range(20):
            assert (await client.get("/loads", headers=DRIVER)).status_code == 200
    await fleet.settle()
    # THEN one load of the copy per instance, and nothing else
    assert store.calls == {"load": INSTANCES}


async def test_a_failure_then_a_success_starts_the_fleets_count_again(settings):
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store)
    fleet.module.black_hole = False
    fleet.module.fail_every = 2  # fail, ok, fail, ok... (gw-1, gw-3... fail; the others not)
    for _ in range(4 * INSTANCES):
        await fleet.request()
    # THEN each failure was counted, and successes after them (the copy showing the count,
    # refreshed every 0.5 s) set the count back: never 5 in a row, no breaker opened
    assert store.calls["add_failure"] == 2 * INSTANCES
    assert store.calls["reset_failures"] >= INSTANCES // 2
    assert store.items["loads"].failures < FAIL_MAX and store.calls["open"] == 0
    assert fleet.states() == [BreakerState.CLOSED] * INSTANCES


async def test_ops_status_shows_local_and_fleet_state(settings):
    store = MemoryBreakerStore()
    fleet = build_fleet(settings, store)
    await black_hole_outage(fleet)
    status = (await fleet.clients[0].get("/ops/status", headers=OPS)).json()
    loads = status["modules"]["loads"]
    assert loads["breaker"]["state"] == "open"
    shared = loads["fleet"]
    assert shared["state"] == "open" and shared["opened_by"] == "gw-4"
    assert shared["reason"] == "5 failures in a row across the fleet"
    assert shared["until"] - shared["opened_at"] == 60 and shared["instance"] == "gw-0"
    assert status["modules"]["navigate"]["fleet"]["state"] == "closed"
    assert status["breaker_fleet"]["store_errors"] == {}


async def test_without_a_control_table_there_is_no_fleet_and_status_is_as_before(settings):
    fleet = build_fleet(settings, store=None)
    assert all(b.fleet is None for b in fleet.breakers)
    status = (await fleet.clients[0].get("/ops/status", headers=OPS)).json()
    assert "fleet" not in status["modules"]["loads"] and "breaker_fleet" not in status


def test_the_settings_build_a_control_table_fleet_unless_switched_off(settings):
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    on = create_app(settings.model_copy(update={"control_table": "t"}), routes=table)
    assert on.state.fleet is not None and on.state.fleet.refresh_seconds == 0.5
    assert on.state.upstreams["loads"].breaker.fleet is on.state.fleet
    off = create_app(
        settings.model_copy(update={"control_table": "t", "breaker_fleet": False}), routes=table
    )
    assert off.state.fleet is None


def test_in_lambda_requests_refresh_the_copy_unless_told_otherwise(settings, monkeypatch):
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    shared = settings.model_copy(update={"control_table": "t"})
    process = create_app(shared, routes=table).state.fleet
    assert process.sleep is not None and not process.requests_refresh
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "relay-gateway")
    assert GatewaySettings().breaker_refresh == "request"
    lambda_fleet = create_app(
        shared.model_copy(update={"breaker_refresh": GatewaySettings().breaker_refresh}),
        routes=table,
    ).state.fleet
    assert lambda_fleet.sleep is None and lambda_fleet.requests_refresh
    assert lambda_fleet.refresh_wait_seconds == 0.1
    assert lambda_fleet.summary()["refresh"] == "request"
    monkeypatch.setenv("RELAY_BREAKER_REFRESH", "background")
    assert GatewaySettings().breaker_refresh == "background"


async def test_the_background_loop_refreshes_an_idle_instance():
    store = MemoryBreakerStore()
    wall = WallClock()
    slept: list[float] = []
    parked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await fleet.idle()  # the refresh it started has landed
        slept.append(seconds)
        wall.advance(seconds)
        if len(slept) >= 3:
            parked.set()
            await asyncio.Event().wait()

    fleet = FleetBreakers(store, clock=wall, refresh_seconds=0.5, sleep=sleep)
    fleet.tick()  # the first request starts the loop
    await parked.wait()
    await fleet.idle()
    fleet.close_loop()
    assert slept == [0.5, 0.5, 0.5] and store.calls["load"] == 3
