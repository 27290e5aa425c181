"""The gateway's metrics: GET /metrics (Prometheus text) and the dashboard's summary."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.ops.metrics import RequestMetrics, emit_last, status_class
from shared_contracts.identity import Role
from tests.unit.gateway.test_resilience import a_load

LOAD = {"items": [a_load()]}


def scrape(gateway, bearer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = gateway.get("/metrics", headers=bearer(Role.OPS, None))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def sample(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_ops_role(gateway, bearer):
    assert gateway.get("/metrics").status_code == 401
    assert gateway.get("/metrics", headers=bearer()).status_code == 403
    assert gateway.get("/ops/metrics/summary", headers=bearer()).status_code == 403


def test_a_live_answer_is_counted_by_module_unit_route_outcome_and_class(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json=LOAD))
    for _ in range(3):
        assert gateway.get("/loads", headers=bearer()).status_code == 200
    samples = scrape(gateway, bearer)
    live = {"module": "loads", "unit": "loads", "route": "/loads", "outcome": "live", "code": "2xx"}
    assert sample(samples, "relay_gateway_requests_total", **live) == 3
    count = sample(
        samples, "relay_gateway_request_duration_seconds_count", module="loads", outcome="live"
    )
    assert count == 3
    assert sample(samples, "relay_gateway_breaker_state", unit="loads") == 0
    assert sample(samples, "relay_gateway_bulkhead_limit", unit="loads") > 0
    assert sample(samples, "relay_gateway_retry_budget_tokens", unit="loads") > 0


def test_a_fallback_answer_and_an_open_breaker_show(gateway, upstream, bearer):
    route = upstream.get("http://loads.test/loads")
    route.mock(return_value=httpx.Response(200, json=LOAD))
    assert gateway.get("/loads", headers=bearer()).status_code == 200
    route.mock(side_effect=httpx.ConnectError("down"))
    for _ in range(6):  # fail_max = 5 for loads in routes.toml, then the copy
        assert gateway.get("/loads", headers=bearer()).status_code == 200
    samples = scrape(gateway, bearer)
    copy = {"module": "loads", "unit": "loads", "route": "/loads", "outcome": "last-known-good"}
    assert sample(samples, "relay_gateway_requests_total", **copy, code="2xx") == 6
    assert sample(samples, "relay_gateway_breaker_state", unit="loads") == 2
    assert sample(samples, "relay_gateway_breaker_transitions_total", unit="loads", state="open")
    assert sample(samples, "relay_gateway_loads_served_degraded_total") == 6
    summary = gateway.get("/ops/metrics/summary", headers=bearer(Role.OPS, None)).json()
    assert summary["breakers"]["loads"] == "open"
    assert {"module": "loads", "unit": "loads", "outcome": "last-known-good", "count": 6} in (
        summary["requests"]
    )


def test_what_the_gateway_refuses_itself_is_counted_as_refused(gateway, upstream, bearer):
    assert gateway.get("/loads").status_code == 401
    assert gateway.get("/nowhere", headers=bearer()).status_code == 404
    samples = scrape(gateway, bearer)
    no_token = {
        "module": "loads",
        "unit": "loads",
        "route": "/loads",
        "outcome": "refused",
        "code": "4xx",
    }
    assert sample(samples, "relay_gateway_requests_total", **no_token) == 1
    no_route = {
        "module": "gateway",
        "unit": "gateway",
        "route": "",
        "outcome": "refused",
        "code": "4xx",
    }
    assert sample(samples, "relay_gateway_requests_total", **no_route) == 1


def test_latency_goes_into_the_first_bucket_that_holds_it():
    metrics = RequestMetrics(buckets=(0.01, 0.1))
    for seconds in (0.005, 0.01, 0.05, 3.0):
        metrics.record("loads", "loads", "/loads", "live", 200, seconds)
    counts = metrics.latency[("loads", "live")]
    assert counts[:3] == [2, 1, 1]  # <= 0.01 (inclusive), <= 0.1, +Inf
    assert counts[-1] == 3.065
    assert [status_class(s) for s in (200, 304, 429, 503, 999)] == [
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "5xx",
    ]


def test_in_lambda_the_invocations_request_goes_out_as_emf(capsys):
    metrics = RequestMetrics()
    emit_last(metrics)  # nothing handled yet: nothing emitted
    assert capsys.readouterr().out == ""
    metrics.record("loads", "loads/cell-1", "/loads", "last-known-good", 200, 0.004)
    emit_last(metrics)
    emitted = json.loads(capsys.readouterr().out)
    directive = emitted["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Relay"
    assert {m["Name"] for m in directive["Metrics"]} == {
        "relay_gateway_requests_total",
        "relay_gateway_request_duration_seconds",
    }
    assert directive["Dimensions"] == [["module", "outcome", "service"]]
    assert emitted["module"] == "loads" and emitted["outcome"] == "last-known-good"
    assert emitted["relay_gateway_requests_total"] == [1.0]
    assert emitted["relay_gateway_request_duration_seconds"] == [0.004]
    emit_last(metrics)  # once per request
    assert capsys.readouterr().out == ""


def test_a_shed_request_is_counted_under_its_module_as_shed(gateway, upstream, bearer):
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json=LOAD))
    gateway.app.state.shedder.forced_tiers = lambda: frozenset({"critical"})
    assert gateway.get("/loads", headers=bearer()).status_code == 503
    gateway.app.state.shedder.forced_tiers = frozenset
    assert gateway.get("/loads", headers=bearer()).status_code == 200
    samples = scrape(gateway, bearer)
    shed = {"module": "loads", "unit": "loads", "route": "/loads", "outcome": "shed", "code": "5xx"}
    assert sample(samples, "relay_gateway_requests_total", **shed) == 1
    assert sample(samples, "relay_gateway_shed_total", tier="critical") == 1
    live = {**shed, "outcome": "live", "code": "2xx"}
    assert sample(samples, "relay_gateway_requests_total", **live) == 1
