"""module_kit.metrics: one EMF line per metric, written at once, never failing the work.

Also what every module app counts by itself (module_kit.http.RequestLog): each answer by
route template and status class, under uvicorn or Lambda alike (no flush needed).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from module_kit import metrics
from module_kit.app import module_app


def emf(out: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" in line]


@pytest.fixture(autouse=True)
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    monkeypatch.delenv("POWERTOOLS_DEV", raising=False)


def test_a_count_is_one_emf_line_with_the_service_and_its_labels():
    out = io.StringIO()
    metrics.ModuleMetrics("loads", stream=out).count(metrics.EVENTS_APPLIED, via="replay")
    (line,) = emf(out.getvalue())
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Relay"
    assert sorted(directive["Dimensions"][0]) == ["service", "via"]
    assert directive["Metrics"] == [{"Name": metrics.EVENTS_APPLIED, "Unit": "Count"}]
    assert (line["service"], line["via"], line[metrics.EVENTS_APPLIED]) == (
        "loads",
        "replay",
        [1.0],
    )


def test_seconds_are_recorded_in_seconds():
    out = io.StringIO()
    metrics.ModuleMetrics("loads", stream=out).seconds(metrics.ASSIGNMENT_SEEN_DELAY, 42.5)
    (line,) = emf(out.getvalue())
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] == "Seconds"
    assert line[metrics.ASSIGNMENT_SEEN_DELAY] == [42.5]


def test_the_default_stream_is_stdout_at_the_time_of_writing(capsys):
    metrics.ModuleMetrics("gatepass").count(metrics.PASSES_ISSUED)
    assert [line[metrics.PASSES_ISSUED] for line in emf(capsys.readouterr().out)] == [[1.0]]


def test_powertools_switch_turns_the_lines_off(monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    out = io.StringIO()
    metrics.ModuleMetrics("loads", stream=out).count(metrics.ASSIGNMENTS_CREATED)
    assert out.getvalue() == ""


class BrokenStream(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError("disk full")


def test_a_metric_that_cannot_be_written_never_fails_the_caller():
    metrics.ModuleMetrics("loads", stream=BrokenStream()).count(metrics.ASSIGNMENTS_CREATED)


def test_status_class():
    assert [metrics.status_class(s) for s in (200, 204, 304, 404, 503, 0)] == [
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "5xx",
    ]


def test_replayed_writes_are_told_by_the_replay_header():
    assert metrics.via_of([(b"content-type", b"application/json")]) == "live"
    assert metrics.via_of([(metrics.REPLAY_HEADER.encode(), b"1")]) == "replay"
    assert metrics.current_via() == "live"


def test_each_module_answer_is_counted_by_route_template_and_status_class(capsys):
    # GIVEN a module app; its routes see how the request came in
    app = module_app("probe", title="Relay probe", service=object())

    @app.get("/things/{thing_id}")
    def thing(thing_id: str, request: Request) -> dict[str, str]:
        return {"via": metrics.current_via()}

    client = TestClient(app)
    capsys.readouterr()
    # WHEN it answers a 200, a replayed 200, an unknown route and a health check
    assert client.get("/things/a").json() == {"via": "live"}
    assert client.get("/things/b", headers={metrics.REPLAY_HEADER: "1"}).json() == {"via": "replay"}
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/healthz").status_code == 200
    # THEN three answers are counted, by template (not path) and class; health is not
    counted = [
        (line["service"], line["route"], line["code"], line[metrics.REQUESTS])
        for line in emf(capsys.readouterr().out)
        if metrics.REQUESTS in line
    ]
    assert counted == [
        ("probe", "/things/{thing_id}", "2xx", [1.0]),
        ("probe", "/things/{thing_id}", "2xx", [1.0]),
        ("probe", "none", "4xx", [1.0]),
    ]
