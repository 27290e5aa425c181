"""The dashboard and the alarms read only metrics the code emits, and chart every critical one.

A metric renamed in the code (or a typo in a template) would leave an alarm that can never
fire and a flat line on the dashboard; these tests fail instead. A name counts as emitted
when it appears as a string literal in the Python source (an EMF metric: module_kit.metrics,
module_kit.lambda_entry, gateway.ops.metrics) or, for a counter ``x_total``, its family
``x`` does (prometheus-client appends ``_total`` when it exposes the gateway's counters).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from samtranslator.yaml_helper import yaml_parse

from module_kit import metrics
from relay.cloud import ROOT, ROOT_TEMPLATE

NAMESPACE = "Relay"
TEMPLATES = [ROOT_TEMPLATE, *sorted((ROOT / "modules").glob("*/template.yaml"))]
SOURCES = ("gateway", "module_kit", "modules", "relay")
METRIC_NAME = re.compile(r"\brelay_[a-z0-9_]+\b")
# The critical input/output metrics the modules emit: each is on the dashboard.
CRITICAL = [
    metrics.ASSIGNMENTS_CREATED,
    metrics.ASSIGNMENTS_SEEN,
    metrics.ASSIGNMENT_SEEN_DELAY,
    metrics.EVENTS_ACCEPTED,
    metrics.EVENTS_APPLIED,
    metrics.NOTIFICATIONS_ENQUEUED,
    metrics.NOTIFICATIONS_DELIVERED,
    metrics.NOTIFICATIONS_DEAD_LETTERED,
    metrics.PASSES_ISSUED,
    metrics.PASSES_VERIFIED,
]


def resources(path: Path) -> dict[str, Any]:
    return yaml_parse(path.read_text())["Resources"]


def alarm_metric_names(path: Path) -> Iterator[tuple[str, str]]:
    """(alarm, metric name) for every metric of namespace Relay an alarm reads."""
    for lid, res in resources(path).items():
        if res["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = res["Properties"]
        if props.get("Namespace") == NAMESPACE:
            yield lid, props["MetricName"]
        for query in props.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == NAMESPACE:
                yield lid, metric["MetricName"]


def dashboard_bodies(path: Path) -> Iterator[tuple[str, str]]:
    for lid, res in resources(path).items():
        if res["Type"] == "AWS::CloudWatch::Dashboard":
            body = res["Properties"]["DashboardBody"]
            yield lid, body["Fn::Sub"] if isinstance(body, dict) else body


@lru_cache(maxsize=1)
def source_text() -> str:
    files = [p for top in SOURCES for p in sorted((ROOT / top).rglob("*.py"))]
    return "\n".join(p.read_text() for p in files)


def emitted(name: str) -> bool:
    text = source_text()
    names = [name] + ([name.removesuffix("_total")] if name.endswith("_total") else [])
    return any(f'"{n}"' in text for n in names)


def used_names() -> list[tuple[str, str]]:
    out = [
        (f"{p.relative_to(ROOT)}:{lid}", name)
        for p in TEMPLATES
        for lid, name in alarm_metric_names(p)
    ]
    for path in TEMPLATES:
        for lid, body in dashboard_bodies(path):
            out += [(f"{path.relative_to(ROOT)}:{lid}", n) for n in METRIC_NAME.findall(body)]
    return sorted(set(out))


def test_the_stage_has_a_dashboard_and_critical_alarms():
    assert [lid for lid, _ in dashboard_bodies(ROOT_TEMPLATE)] == ["OperationsDashboard"]
    alarmed = {name for _, name in alarm_metric_names(ROOT_TEMPLATE)}
    assert set(CRITICAL) - {metrics.ASSIGNMENT_SEEN_DELAY} <= alarmed


@pytest.mark.parametrize(("where", "name"), used_names())
def test_every_metric_read_by_a_dashboard_or_alarm_is_emitted(where, name):
    assert emitted(name), f"{where} reads {name}, which no code emits"


def test_the_check_itself_tells_a_missing_name():
    assert not emitted("relay_loads_assignments_lost_total")
    assert emitted(metrics.ASSIGNMENTS_CREATED)


def test_every_critical_metric_is_on_the_dashboard():
    (body,) = [body for _, body in dashboard_bodies(ROOT_TEMPLATE)]
    assert [name for name in CRITICAL if name not in METRIC_NAME.findall(body)] == []


def test_every_alarm_on_relay_metrics_says_how_to_treat_missing_data():
    for path in TEMPLATES:
        for lid in {lid for lid, _ in alarm_metric_names(path)}:
            props = resources(path)[lid]["Properties"]
            assert props.get("TreatMissingData") == "notBreaching", f"{path.name}:{lid}"
