"""Load shedding: the decision by tier (signals injected), the step's answer, and the
gateway's own routes never shed."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from gateway.config import GatewaySettings
from gateway.edge.shedding import (
    TIERS,
    ShedConfig,
    Shedder,
    ShedLoad,
    shed_config,
)
from gateway.routing.routes import Route, RouteTable
from shared_contracts.identity import Role
from tests.unit.gateway.conftest import UPSTREAMS

pytestmark = pytest.mark.anyio

# capacity 100 in flight or 100 ms of lag: a tier's fraction is its in-flight count
CONFIG = ShedConfig(
    max_in_flight=100,
    max_delay_ms=100.0,
    shed_at={"optional": 0.1, "deferrable": 0.2, "degradable": 0.4, "critical": 1.0},
    resume_below=0.5,
    hold_seconds=0.0,
    ramp_seconds=0.0,  # a tier let back in is let in whole (the ramp has its own tests)
    probe_window=5,
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


def admitted(shedder: Shedder) -> list[str]:
    return [tier for tier in TIERS if shedder.admit(tier)]


# --- the decision ----------------------------------------------------------------------


def test_tiers_are_shed_least_important_first_as_requests_pile_up():
    seen = {}
    for in_flight in (0, 9, 10, 20, 40, 99, 100):
        shedder = Shedder(CONFIG)  # no hysteresis carried between the levels
        shedder.in_flight = in_flight
        seen[in_flight] = admitted(shedder)
    assert seen == {
        0: list(TIERS),
        9: list(TIERS),
        10: ["deferrable", "degradable", "critical"],
        20: ["degradable", "critical"],
        40: ["critical"],
        99: ["critical"],
        100: [],  # the hard limit: critical too
    }


def test_the_loops_standing_lag_sheds_as_in_flight_does():
    shedder = Shedder(CONFIG)
    for _ in range(3):
        shedder.observe_lag(25.0)  # 25 ms of 100: optional and deferrable
    assert shedder.delay_ms == 25.0
    assert admitted(shedder) == ["degradable", "critical"]


def test_one_late_probe_is_not_a_standing_queue_and_several_are():
    shedder = Shedder(CONFIG)
    for lag in (1.0, 1.0, 1.0, 1.0, 300.0):  # one late probe (a pause): left out
        shedder.observe_lag(lag)
    assert shedder.delay_ms == 1.0
    assert admitted(shedder) == list(TIERS)
    shedder.observe_lag(200.0)  # a second one: (1 + 1 + 1 + 200) / 4 of the last five
    assert shedder.delay_ms == pytest.approx(50.75)
    assert admitted(shedder) == ["critical"]
    for _ in range(3):
        shedder.observe_lag(150.0)  # the window is now 300, 200, 150, 150, 150
    assert shedder.delay_ms == pytest.approx(162.5)
    assert admitted(shedder) == []  # past the hard limit: critical too


def test_a_shed_tier_is_let_back_in_only_after_a_calm_second():
    now = [0.0]
    shedder = Shedder(replace(CONFIG, hold_seconds=1.0), clock=lambda: now[0])
    shedder.in_flight = 20
    assert not shedder.admit("deferrable")  # 0.2: shed from here
    shedder.in_flight = 5  # calm (below 0.1) from now on
    assert not shedder.admit("deferrable")
    now[0] = 0.9
    assert not shedder.admit("deferrable")  # calm for 0.9 s: still held
    shedder.in_flight = 15  # not calm again: the hold starts over
    assert not shedder.admit("deferrable")
    shedder.in_flight = 5
    now[0] = 1.5
    assert not shedder.admit("deferrable")
    now[0] = 2.5
    assert shedder.admit("deferrable")  # a whole second below 0.1
    assert shedder.shedding == set() and shedder.shed["deferrable"] == 5


def let_in(shedder: Shedder, tier: str, requests: int) -> int:
    return sum(shedder.admit(tier) for _ in range(requests))


def shed_then_calm(now: list[float]) -> Shedder:
    """A shedder (1 s hold, 4 s ramp, on the clock ``now``) that shed the deferrable tier
    at 0 s and is calm (in flight below half its threshold) from then on."""
    shedder = Shedder(replace(CONFIG, hold_seconds=1.0, ramp_seconds=4.0), clock=lambda: now[0])
    shedder.in_flight = 20
    assert not shedder.admit("deferrable")  # shed
    shedder.in_flight = 5
    return shedder


def test_a_tier_let_back_in_gets_a_share_growing_over_the_ramp():
    now = [0.0]
    shedder = shed_then_calm(now)
    assert let_in(shedder, "deferrable", 100) == 0
    now[0] = 1.0  # held a second: the ramp begins
    assert let_in(shedder, "deferrable", 100) == 0
    now[0] = 2.0  # a quarter of the way
    assert let_in(shedder, "deferrable", 100) == 25
    assert shedder.view()["letting_in"] == {"deferrable": 0.25}
    assert shedder.view()["shedding"] == ["deferrable"]
    now[0] = 4.0  # three quarters: one request in four still shed, evenly
    seen = [shedder.admit("deferrable") for _ in range(8)]
    assert seen.count(True) == 6 and "FF" not in "".join("TF"[not s] for s in seen)
    now[0] = 5.0  # the whole ramp: no longer shed
    assert shedder.admit("deferrable")
    assert shedder.shedding == set() and shedder.view()["letting_in"] == {}


def test_pressure_back_during_the_ramp_sheds_the_tier_whole_and_starts_over():
    now = [0.0]
    shedder = shed_then_calm(now)
    shedder.admit("deferrable")
    now[0] = 3.0  # half let in
    assert let_in(shedder, "deferrable", 10) == 5
    shedder.in_flight = 10  # back at half the threshold: the share's traffic was too much
    assert let_in(shedder, "deferrable", 10) == 0
    shedder.in_flight = 5
    now[0] = 3.5
    assert let_in(shedder, "deferrable", 10) == 0  # held again
    now[0] = 5.5  # held a second, then a quarter of the ramp
    assert let_in(shedder, "deferrable", 100) == 25


def test_the_early_shed_asks_only_whether_a_tier_is_shed_whole():
    now = [0.0]
    shedder = shed_then_calm(now)
    assert not shedder.admit("deferrable", whole_only=True)  # held: shed whole
    now[0] = 2.0
    # let in, for ShedLoad to decide: the server has no share of its own to keep
    assert all(shedder.admit("deferrable", whole_only=True) for _ in range(8))
    assert let_in(shedder, "deferrable", 100) == 25  # the share is ShedLoad's alone


def test_pressure_is_the_fuller_signal():
    shedder = Shedder(CONFIG)
    shedder.in_flight = 30
    shedder.observe_lag(5.0)
    assert shedder.pressure == pytest.approx(0.3)  # in flight: 30 of 100
    for _ in range(4):
        shedder.observe_lag(50.0)
    assert shedder.delay_ms == pytest.approx(38.75)  # (5 + 50 * 3) / 4
    assert shedder.pressure == pytest.approx(0.3875)  # the loop: 38.75 ms of 100


def test_a_shed_tier_stays_shed_until_pressure_falls_below_half_its_threshold():
    shedder = Shedder(CONFIG)
    shedder.in_flight = 20
    assert not shedder.admit("deferrable")  # 0.2: shed from here
    shedder.in_flight = 15
    assert not shedder.admit("deferrable")  # still above 0.1 (half of 0.2)
    assert shedder.shedding == {"deferrable"}
    shedder.in_flight = 9
    assert shedder.admit("deferrable")  # below 0.1: admitted again
    assert shedder.shedding == set()
    shedder.in_flight = 15
    assert shedder.admit("deferrable")  # and only shed again from 0.2
    assert shedder.shed["deferrable"] == 2


def test_shed_requests_are_counted_by_tier():
    shedder = Shedder(CONFIG)
    shedder.in_flight = 25
    for tier in ("optional", "optional", "deferrable", "degradable", "critical"):
        shedder.admit(tier)
    assert shedder.shed == {"optional": 2, "deferrable": 1}


def test_a_forced_tier_is_shed_whatever_the_load_and_only_that_tier():
    forced = frozenset({"degradable"})
    shedder = Shedder(CONFIG, forced_tiers=lambda: forced)
    assert admitted(shedder) == ["optional", "deferrable", "critical"]
    assert shedder.shed == {"degradable": 1}
    assert shedder.view()["forced"] == ["degradable"]


def test_disabled_it_sheds_only_forced_tiers():
    shedder = Shedder(ShedConfig(enabled=False, max_in_flight=1))
    shedder.in_flight = 50
    shedder.observe_lag(10_000.0)
    assert admitted(shedder) == list(TIERS)
    shedder.forced_tiers = lambda: frozenset({"optional"})
    assert admitted(shedder) == ["deferrable", "degradable", "critical"]


def test_off_by_default_in_lambda_on_elsewhere(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    assert shed_config(GatewaySettings()).enabled
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "relay-gateway")
    assert not shed_config(GatewaySettings()).enabled


def test_settings_give_the_capacity_and_fractions(monkeypatch):
    monkeypatch.setenv("RELAY_SHED_MAX_IN_FLIGHT", "40")
    monkeypatch.setenv("RELAY_SHED_AT_DEGRADABLE", "0.6")
    config = shed_config(GatewaySettings())
    assert config.max_in_flight == 40
    assert config.shed_at["degradable"] == 0.6


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"shed_at": {"optional": 0.5, "critical": 1.0}}, "names each of"),
        (
            {"shed_at": {"optional": 0.5, "deferrable": 0.3, "degradable": 0.6, "critical": 1}},
            "less important",
        ),
        (
            {"shed_at": {"optional": 0, "deferrable": 0.3, "degradable": 0.6, "critical": 1}},
            "(0, 1]",
        ),
        ({"resume_below": 1.5}, "resume_below"),
        ({"ramp_seconds": -1}, "ramp_seconds"),
        ({"retry_after_seconds": 0}, "retry_after_seconds"),
    ],
)
def test_a_config_that_could_never_work_is_refused_at_construction(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ShedConfig(**change)


async def probe_with(lags_seconds: list[float], arrivals_per_wake: int) -> Shedder:
    """The probe over a clock the sleeps move (each wake-up ``lags_seconds`` late), with
    ``arrivals_per_wake`` requests arriving during each sleep."""
    now = [0.0]
    lags = iter(lags_seconds)

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        try:
            now[0] += seconds + next(lags)
        except StopIteration:
            raise Stop from None
        shedder.arrivals += arrivals_per_wake

    shedder = Shedder(CONFIG, clock=lambda: now[0], sleep=sleep)
    with pytest.raises(Stop):
        await shedder.probe()
    return shedder


async def test_the_probe_records_how_late_the_loop_wakes():
    shedder = await probe_with([0.001, 0.030, 0.002], arrivals_per_wake=100)  # ~4,000 a second
    assert list(shedder._lags) == pytest.approx([1.0, 30.0, 2.0])
    assert shedder.delay_ms == pytest.approx(1.5)  # the 30 ms probe left out


async def test_a_quiet_process_reads_no_lag_however_late_it_wakes():
    # 5 requests per ~50 ms: 100 a second, below min_rate_for_delay (a busy host, not us)
    shedder = await probe_with([0.030, 0.030, 0.030, 0.030], arrivals_per_wake=5)
    assert list(shedder._lags) == [0.0, 0.0, 0.0, 0.0] and shedder.delay_ms == 0.0
    assert shedder.admit("optional")


# --- the step --------------------------------------------------------------------------

TABLE = RouteTable.from_dict(
    {
        "modules": {
            "loads": {"tier": "critical", "upstream": "http://loads.test"},
            "message": {"tier": "deferrable", "upstream": "http://message.test"},
        },
        "routes": [
            {
                "prefix": "/loads",
                "module": "loads",
                "roles": ["dispatch"],
            },
            {"prefix": "/message", "module": "message", "roles": ["dispatch"]},
            {
                "prefix": "/dispatch/messages",
                "module": "message",
                "roles": ["dispatch"],
                "shed_tier": "optional",
            },
        ],
    }
)


def http_scope(route: Route) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": route.prefix,
        "headers": [],
        "state": {"request_id": "req-00000001", "route": route},
    }


def route(prefix: str) -> Route:
    found = TABLE.match(prefix)
    assert found is not None
    return found


async def call(step: ShedLoad, scope: dict) -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await step(scope, receive, send)
    return sent


async def test_a_shed_request_gets_a_503_overloaded_problem_with_retry_after():
    called = []

    async def forward(scope, receive, send) -> None:
        called.append(scope["path"])

    shedder = Shedder(CONFIG)
    shedder.in_flight = 25  # optional and deferrable shed
    step = ShedLoad(forward, shedder=shedder, table=TABLE)
    start, body = await call(step, http_scope(route("/message")))
    assert called == []
    assert start["status"] == 503
    hdrs = dict(start["headers"])
    assert hdrs[b"content-type"] == b"application/problem+json"
    assert hdrs[b"retry-after"] == b"1"
    assert int(hdrs[b"content-length"]) == len(body["body"])
    problem = json.loads(body["body"])
    assert problem["type"] == "urn:relay:problem:overloaded"
    assert problem["status"] == 503
    assert problem["request_id"] == "req-00000001"
    assert "deferrable" in problem["detail"]
    assert shedder.shed == {"deferrable": 1}


async def test_a_routes_shed_tier_overrides_its_modules():
    async def forward(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})

    shedder = Shedder(CONFIG)
    shedder.in_flight = 10  # only optional is shed
    step = ShedLoad(forward, shedder=shedder, table=TABLE)
    assert step.tiers == {
        "/loads": "critical",
        "/message": "deferrable",
        "/dispatch/messages": "optional",
    }
    assert (await call(step, http_scope(route("/dispatch/messages"))))[0]["status"] == 503
    assert (await call(step, http_scope(route("/message"))))[0]["status"] == 201


async def test_admitted_requests_are_in_flight_until_answered_even_when_they_fail():
    during = []

    async def forward(scope, receive, send) -> None:
        during.append(shedder.in_flight)
        raise RuntimeError("module exploded")

    shedder = Shedder(CONFIG)
    step = ShedLoad(forward, shedder=shedder, table=TABLE)
    with pytest.raises(RuntimeError):
        await call(step, http_scope(route("/loads")))
    assert during == [1]
    assert shedder.in_flight == 0


# --- through the app: the gateway's own routes are never shed ---------------------------


def test_ops_and_health_are_answered_while_every_tier_is_forced_shed(gateway, bearer, upstream):
    upstream.get("http://loads.test/loads").respond(200, json={"items": []})
    gateway.app.state.shedder.forced_tiers = lambda: frozenset(TIERS)
    shed = gateway.get("/loads", headers=bearer(Role.DRIVER))
    assert shed.status_code == 503
    assert shed.json()["type"] == "urn:relay:problem:overloaded"
    assert shed.headers["retry-after"] == "1"
    assert shed.headers["x-request-id"]  # the guard's headers, as on every answer
    assert gateway.get("/healthz").status_code == 200
    status = gateway.get("/ops/status", headers=bearer(Role.OPS, None))
    assert status.status_code == 200
    shedding = status.json()["shedding"]
    assert shedding["forced"] == sorted(TIERS)
    assert shedding["shed"]["critical"] == 1
    assert shedding["in_flight"] == 0


def test_the_route_tables_dispatch_messages_are_optional(settings):
    table = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    step = ShedLoad(lambda *a: None, shedder=Shedder(), table=table)  # type: ignore[arg-type,return-value]
    assert step.tiers["/dispatch/messages"] == "optional"
    assert step.tiers["/message"] == "deferrable"
    assert step.tiers["/navigate"] == "degradable"
    assert step.tiers["/loads"] == step.tiers["/gatepass"] == "critical"


def test_the_servers_early_answer_is_the_same_503_and_counted(gateway, bearer, upstream):
    early = gateway.app.early_shed
    assert not early.active()
    assert early.answer(b"/message") is None  # nothing shed: on to the pipeline
    gateway.app.state.shedder.forced_tiers = lambda: frozenset({"deferrable"})
    assert early.active()
    assert early.answer(b"/loads?x=1") is None and early.answer(b"/nowhere") is None
    raw = early.answer(b"/message?x=1")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 503 Service Unavailable"
    fields = dict(line.split(b": ", 1) for line in lines[1:])
    assert fields[b"retry-after"] == b"1" and fields[b"relay-region"] == b"us-east-1"
    assert int(fields[b"content-length"]) == len(body)
    problem = json.loads(body)
    assert problem["type"].endswith("overloaded")
    assert problem["request_id"] == fields[b"x-request-id"].decode()
    # the pipeline's own answer for the same request: the same problem, bar the request id
    piped = gateway.post("/message", json={"body": "hi"}, headers=bearer())
    assert piped.status_code == 503
    assert {k: v for k, v in piped.json().items() if k != "request_id"} == {
        k: v for k, v in problem.items() if k != "request_id"
    }
    assert gateway.app.state.shedder.shed["deferrable"] == 2
    summary = gateway.get("/ops/metrics/summary", headers=bearer(Role.OPS, None)).json()
    assert {"module": "message", "unit": "message", "outcome": "shed", "count": 2} in (
        summary["requests"]
    )
