"""The operators' console without a gateway: rates from cumulative counts, the token gate,
the forwarding to /ops, the background poll (httpx MockTransport as the gateway)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from relay.console.history import History, Sample, counts_from_status, rates
from relay.console.io import critical_io, metric_totals
from relay.console.server import Console, ConsoleSettings, create_app

GOOD, BAD, BUSY = "good-token", "bad-token", "busy-token"  # BUSY: over its rate limit


def summary(instance: str, live: int, lkg: int = 0, unavailable: int = 0) -> dict:
    return {
        "at": 0,
        "instance": instance,
        "requests": [
            {"module": "loads", "unit": "loads", "outcome": "live", "count": live},
            {"module": "loads", "unit": "loads", "outcome": "last-known-good", "count": lkg},
            {"module": "loads", "unit": "loads", "outcome": "unavailable", "count": unavailable},
        ],
        "breakers": {"loads": "closed"},
        "in_flight": 1,
        "shed": {},
    }


STATUS = {
    "modules": {
        "loads": {"tier": "critical", "breaker": {"state": "open", "calls": 12, "failures": 5}},
        "navigate": {"tier": "degradable", "breaker": {"state": "closed", "calls": 3}},
    },
    "fallbacks_served": {"loads:last-known-good": 4, "navigate:static": 1},
    "unavailable": {"loads": 2},
    "faults": [],
}


class Gateway:
    """A stand-in gateway: ops routes answer 200 to GOOD, 401 to anything else."""

    def __init__(self, summaries: list[dict] | None = None) -> None:
        self.summaries = summaries
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if request.headers.get("authorization") == f"Bearer {BUSY}":
            return httpx.Response(429, json={"detail": "slow down"})
        if request.headers.get("authorization") != f"Bearer {GOOD}":
            return httpx.Response(401, json={"detail": "no"})
        path = request.url.raw_path.decode()
        if path == "/ops/status":
            return httpx.Response(200, json=STATUS)
        if path == "/ops/metrics/summary":
            if not self.summaries:
                return httpx.Response(404, json={"detail": "not found"})
            return httpx.Response(200, json=self.summaries.pop(0))
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(
            201 if request.method == "POST" else 200,
            json={"path": path, "method": request.method, "body": request.content.decode()},
        )

    def paths(self) -> list[str]:
        return [r.url.raw_path.decode() for r in self.calls]


def test_rates_add_only_what_grew_per_instance_and_survive_a_restart():
    history = History(window_seconds=600)
    # GIVEN two gateway instances polled in turn, each with its own cumulative counts
    history.record(0, "a", {("loads", "loads", "live"): 100}, {})  # baselines: no burst
    history.record(2, "b", {("loads", "loads", "live"): 50}, {})
    history.record(4, "a", {("loads", "loads", "live"): 110}, {})
    history.record(6, "b", {("loads", "loads", "live"): 60, ("loads", "loads", "static"): 4}, {})
    # WHEN instance a restarts (its count starts from zero again)
    history.record(8, "a", {("loads", "loads", "live"): 6}, {})
    series = history.series()
    # THEN each interval's rate is what grew, never a negative or a baseline burst
    assert [s["rates"].get("loads", {}).get("live", 0.0) for s in series] == [0.0, 5.0, 5.0, 3.0]
    assert series[2]["rates"]["loads"]["degraded"] == 2.0
    assert history.totals.total[("loads", "loads", "live")] == 26


def test_the_ring_buffer_keeps_only_its_window():
    history = History(window_seconds=10)
    for t in range(0, 30, 2):
        history.record(t, "a", {("loads", "loads", "live"): t}, {})
    assert [s.at for s in history.samples] == [18, 20, 22, 24, 26, 28]


def test_rates_group_outcomes_into_live_degraded_failed_and_refused():
    before = Sample(0, {}, {})
    after = Sample(
        2,
        {
            ("loads", "loads", "live"): 4,
            ("loads", "loads", "deferred"): 2,
            ("loads", "loads", "last-known-good"): 2,
            ("loads", "loads", "shed"): 2,
            ("loads", "loads", "unavailable"): 2,
            ("loads", "loads", "refused"): 6,
        },
        {},
    )
    assert rates(before, after)["loads"] == {
        "live": 2.0,
        "degraded": 2.0,
        "failed": 2.0,
        "refused": 3.0,
    }


def test_counts_from_status_read_breaker_calls_fallbacks_and_unavailable():
    counts = counts_from_status(STATUS)
    assert counts[("loads", "loads", "live")] == 7
    assert counts[("loads", "loads", "last-known-good")] == 4
    assert counts[("loads", "loads", "unavailable")] == 2
    assert counts[("navigate", "navigate", "static")] == 1


def client(gateway: Gateway, **settings) -> TestClient:
    app = create_app(
        ConsoleSettings(gateway_url="http://gateway.test", **settings),
        transport=httpx.MockTransport(gateway),
        poll=False,
    )
    return TestClient(app, base_url="http://127.0.0.1:8001")


def test_own_endpoints_refuse_a_missing_or_rejected_token_and_check_a_good_one_once():
    gateway = Gateway()
    with client(gateway) as c:
        assert c.get("/api/dashboard").status_code == 401
        assert gateway.calls == []  # no token: not even asked
        bad = c.get("/api/dashboard", headers={"authorization": f"Bearer {BAD}"})
        assert bad.status_code == 401
        assert c.get("/api/io", headers={"authorization": f"Bearer {BAD}"}).status_code == 401
        for _ in range(3):
            r = c.get("/api/dashboard", headers={"authorization": f"Bearer {GOOD}"})
            assert r.status_code == 200
        assert r.json()["history"]["series"] == []
        assert r.json()["status"] == STATUS  # the check's answer, shown before any poll
        # an ops identity over its rate limit is still an ops identity
        busy = c.get("/api/dashboard", headers={"authorization": f"Bearer {BUSY}"})
        assert busy.status_code == 200
        # THEN each token was asked about once (bad, good, busy); the first accepted is polled
        # with, and kept while the gateway accepts it
        assert gateway.paths() == ["/ops/status", "/ops/status", "/ops/status"]
        assert c.app.state.console.token == GOOD


def test_the_page_and_healthz_need_no_token_and_carry_a_strict_policy():
    with client(Gateway()) as c:
        page = c.get("/")
        assert page.status_code == 200 and 'id="login"' in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert c.get("/app.js").status_code == 200
        assert c.get("/healthz").json() == {"ok": True}
        # a name rebound to 127.0.0.1 by another site is not the console's
        assert c.get("/", headers={"host": "evil.example:8001"}).status_code == 400


def test_forwarding_keeps_the_method_body_escapes_and_the_gateways_answer():
    gateway = Gateway()
    with client(gateway) as c:
        good = {"authorization": f"Bearer {GOOD}"}
        r = c.post("/api/gateway/levers", json={"type": "shed", "target": "optional"}, headers=good)
        assert r.status_code == 201
        assert r.json()["path"] == "/ops/levers"
        assert json.loads(r.json()["body"]) == {"type": "shed", "target": "optional"}
        # the change accepted, the console read the gateway again before answering
        assert gateway.paths()[-2:] == ["/ops/status", "/ops/metrics/summary"]
        assert c.app.state.console.status == STATUS
        r = c.delete("/api/gateway/levers/fallback%3Aloads%2Fcell-1", headers=good)
        assert r.status_code == 204
        # the lever id's escapes kept (then the status read; the summary is known missing)
        assert gateway.paths()[-2:] == ["/ops/levers/fallback%3Aloads%2Fcell-1", "/ops/status"]
        # the gateway decides about a bad token; the console passes its answer on
        bad = c.get("/api/gateway/status", headers={"authorization": f"Bearer {BAD}"})
        assert bad.status_code == 401
        assert c.get("/api/gateway/status").status_code == 401  # none sent: not forwarded
        assert c.get("/api/gateway/../healthz", headers=good).status_code == 404


def test_the_poll_charts_the_summary_and_falls_back_to_status_without_one():
    now = [100.0]
    gateway = Gateway([summary("a", 10), summary("a", 20, lkg=4), summary("a", 30, unavailable=2)])

    async def run() -> Console:
        async with httpx.AsyncClient(
            base_url="http://gateway.test", transport=httpx.MockTransport(gateway)
        ) as http:
            console = Console(
                ConsoleSettings(gateway_url="http://gateway.test", token=GOOD),
                http,
                clock=lambda: now[0],
            )
            for _ in range(3):
                await console.poll_once()
                now[0] += 2
            return console

    console = asyncio.run(run())
    view = console.history_view()
    assert view["source"] == "metrics-summary"
    assert [s["rates"]["loads"] for s in view["series"]] == [
        {"live": 5.0, "degraded": 2.0, "failed": 0.0, "refused": 0.0},
        {"live": 5.0, "degraded": 0.0, "failed": 1.0, "refused": 0.0},
    ]
    assert view["latest"]["breakers"]["loads"] == "closed"  # the summary's view wins

    # WHEN the gateway has no summary: counts from /ops/status
    fallback = Gateway([])

    async def run_status() -> Console:
        async with httpx.AsyncClient(
            base_url="http://gateway.test", transport=httpx.MockTransport(fallback)
        ) as http:
            console = Console(ConsoleSettings(gateway_url="http://gateway.test", token=GOOD), http)
            await console.poll_once()
            await console.poll_once()
            return console

    console = asyncio.run(run_status())
    assert console.source == "status"
    assert console.latest["breakers"] == {"loads": "open", "navigate": "closed"}
    # the missing summary was asked once, not at every poll
    assert fallback.paths().count("/ops/metrics/summary") == 1


def test_a_rejected_token_stops_the_poll_until_the_page_sends_another():
    gateway = Gateway()

    async def run() -> Console:
        async with httpx.AsyncClient(
            base_url="http://gateway.test", transport=httpx.MockTransport(gateway)
        ) as http:
            console = Console(ConsoleSettings(gateway_url="http://gateway.test", token=BAD), http)
            await console.poll_once()
            return console

    console = asyncio.run(run())
    assert console.token is None
    assert "refused" in (console.poll_error or "")
    assert not console.history.samples


def test_the_console_keeps_its_own_token_and_takes_the_pages_once_its_own_is_refused():
    gateway = Gateway()
    with client(gateway, token=GOOD) as c:
        console = c.app.state.console
        # WHEN an operator signs in with another ops token (BUSY: accepted, over its limit)
        busy = c.get("/api/dashboard", headers={"authorization": f"Bearer {BUSY}"})
        assert busy.status_code == 200
        # THEN the console polls with its own still: the operator's limit is the operator's
        assert console.token == GOOD
        # WHEN its own is refused (expired), the next token the page sends is polled with
        console.token = BAD
        asyncio.run(console.poll_once())
        assert console.token is None
        assert (
            c.get("/api/dashboard", headers={"authorization": f"Bearer {BUSY}"}).status_code == 200
        )
        assert console.token == BUSY


def test_settings_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="http"):
        ConsoleSettings(gateway_url="gateway:8000")
    with pytest.raises(ValueError, match="poll_seconds"):
        ConsoleSettings(gateway_url="http://g", poll_seconds=0)
    with pytest.raises(ValueError, match="RELAY_CONSOLE_GATEWAY_URL"):
        ConsoleSettings.from_env({})


def test_critical_io_sums_each_metric_over_its_dimensions_and_says_when_it_has_none():
    data = {
        "metrics": [
            {"name": "relay_loads_assignments_created_total", "value": 3, "dimensions": {}},
            {"name": "relay_loads_assignments_seen_total", "value": 1, "dimensions": {"via": "a"}},
            {"name": "relay_loads_assignments_seen_total", "value": 1, "dimensions": {"via": "b"}},
        ]
    }
    assert metric_totals(data)["relay_loads_assignments_seen_total"] == 2
    panel = critical_io(Path("/nowhere"), reader=lambda _: data)
    assignments = panel["pairs"][0]["values"]
    assert [(v["label"], v["value"]) for v in assignments[:2]] == [("created", 3), ("seen", 2)]
    broken = critical_io(Path("/nowhere"), reader=lambda _: 1 / 0)
    assert broken["available"] is False and "ZeroDivisionError" in broken["reason"]


def test_critical_io_reads_the_emf_readers_totals_and_its_delays():
    # GIVEN relay.emf.collect's shape: totals per name, series per dimension set
    data = {
        "updated_at": 1.0,
        "totals": {
            "relay_notifications_enqueued_total": 5.0,
            "relay_notifications_delivered_total": 3.0,
            "relay_notifications_dead_lettered_total": 1.0,
        },
        "series": [
            {
                "name": "relay_loads_assignment_seen_delay_seconds",
                "unit": "Seconds",
                "dimensions": {"service": "loads"},
                "count": 4,
                "sum": 10.0,
                "max": 6.0,
                "p50": 2.0,
                "p90": 5.0,
            }
        ],
    }
    panel = critical_io(Path("/nowhere"), reader=lambda _: data)
    notifications = next(p for p in panel["pairs"] if p["title"] == "Notifications")
    assert [v["value"] for v in notifications["values"]] == [5.0, 3.0, 1.0]
    assert "updated_at" not in metric_totals(data)
    assert panel["delays"] == [
        {
            "metric": "relay_loads_assignment_seen_delay_seconds",
            "count": 4,
            "p50": 2.0,
            "p90": 5.0,
            "max": 6.0,
        }
    ]
