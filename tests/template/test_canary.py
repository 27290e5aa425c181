"""Canary releases in the templates: every function deploys through CodeDeploy, judged on
the new version alone, and every function serving traffic passes pre/post-traffic hooks.

Checked on the SAM translator's output, so the version an alarm names is the
``AWS::Lambda::Version`` SAM publishes for that deployment (docs/deploy.md, Canary
releases).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from module_kit.deploy_hooks import Smoke
from relay.cloud import ROOT

# Functions serving HTTP traffic: (template, function, EMF service name).
SERVING = [
    ("template.yaml", "GatewayFunction", "gateway"),
    ("modules/loads/template.yaml", "LoadsFunction", "loads"),
    ("modules/gatepass/template.yaml", "GatepassFunction", "gatepass"),
    ("modules/navigate/template.yaml", "NavigateFunction", "navigate"),
    ("modules/message/template.yaml", "MessageFunction", "message"),
]
# Queue and stream workers: (template, function, the dead-letter queue of what it consumes).
WORKERS = [
    (
        "modules/notifications/template.yaml",
        "NotificationsFunction",
        "NotificationsDeadLetterQueue",
    ),
    ("template.yaml", "DeferredReplayFunction", "DeferredWritesDeadLetterQueue"),
    ("template.yaml", "FallbackProjectorFunction", "FallbackProjectionDeadLetterQueue"),
]
MINIMUM_CALLS = re.compile(r"^IF\((\w+) >= (\d+) AND (\w+) >= (\d+), 100 \* \3 / \1, 0\)$")


class _NoManagedPolicies:
    def load(self) -> dict:
        return {}


_CACHE: dict[str, dict[str, Any]] = {}


def transformed(template: str) -> dict[str, Any]:
    if template not in _CACHE:
        data = yaml_parse((ROOT / template).read_text())
        packaged = copy.deepcopy(data)
        for lid, res in packaged["Resources"].items():
            if res["Type"] == "AWS::Serverless::Function":
                res["Properties"]["CodeUri"] = f"s3://relay-artifacts/{lid}.zip"
        _CACHE[template] = transform(packaged, {}, _NoManagedPolicies())
    return _CACHE[template]


def raw(template: str) -> dict[str, Any]:
    return yaml_parse((ROOT / template).read_text())


@pytest.fixture(autouse=True)
def _region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def deployment(template: str, function: str) -> dict[str, Any]:
    """What SAM made of ``function``'s deployment preference: its version, alias, group."""
    resources = transformed(template)["Resources"]
    (version,) = [
        lid
        for lid, r in resources.items()
        if r["Type"] == "AWS::Lambda::Version"
        and r["Properties"]["FunctionName"] == {"Ref": function}
    ]
    (alias_id,) = [
        lid
        for lid, r in resources.items()
        if r["Type"] == "AWS::Lambda::Alias"
        and r["Properties"]["FunctionName"] == {"Ref": function}
    ]
    alias = resources[alias_id]
    group_id = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
    group = resources[group_id]["Properties"]
    alarms = {
        a["Name"]["Ref"]: resources[a["Name"]["Ref"]] for a in group["AlarmConfiguration"]["Alarms"]
    }
    return {
        "version": version,
        "alias": alias,
        "alias_id": alias_id,
        "group": group,
        "alarms": alarms,
        "resources": resources,
    }


def metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m["MetricStat"]["Metric"]
        for m in alarm["Properties"].get("Metrics", [])
        if "MetricStat" in m
    ]


def dims(metric: dict[str, Any]) -> dict[str, Any]:
    return {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}


def names_the_new_version(metric: dict[str, Any], version: str) -> bool:
    new = {"Fn::GetAtt": [version, "Version"]}
    given = dims(metric)
    return given.get("ExecutedVersion") == new or given.get("function_version") == new


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_a_serving_function_is_judged_on_its_new_versions_errors_5xx_and_401(
    template, function, service
):
    d = deployment(template, function)
    assert d["group"]["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"].startswith(
        "Canary10Percent"
    )
    seen = set()
    for lid, alarm in d["alarms"].items():
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", lid
        for metric in metrics(alarm):
            # every metric of every alarm is the new version's, never the whole function's
            assert names_the_new_version(metric, d["version"]), (lid, metric)
            seen.add((metric["Namespace"], metric["MetricName"]))
            if metric["Namespace"] == "Relay":
                assert dims(metric)["service"] == service, lid
            else:
                assert dims(metric)["FunctionName"] == {"Ref": function}, lid
    assert {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles")} <= seen
    assert {("Relay", "Answers"), ("Relay", "Answers5xx"), ("Relay", "Answers401")} <= seen


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_ratio_alarms_judge_a_minute_only_once_the_new_version_served_enough_calls(
    template, function, service
):
    for lid, alarm in deployment(template, function)["alarms"].items():
        (returned,) = [m for m in alarm["Properties"]["Metrics"] if m.get("ReturnData", True)]
        match = MINIMUM_CALLS.match(returned["Expression"])
        assert match, (lid, returned["Expression"])
        assert int(match.group(2)) >= 5, "at least 5 calls of the new version in the minute"
        assert int(match.group(4)) >= 2, "never one bad call alone"
        assert alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
        assert 10 <= alarm["Properties"]["Threshold"] <= 50, lid
        periods = {
            m["MetricStat"]["Period"] for m in alarm["Properties"]["Metrics"] if "MetricStat" in m
        }
        assert periods == {60}, lid


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_a_serving_function_has_pre_and_post_traffic_hooks_on_its_new_version(
    template, function, service
):
    d = deployment(template, function)
    update = d["alias"]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    for key, handler in (
        ("BeforeAllowTrafficHook", "module_kit.deploy_hooks.pre_traffic"),
        ("AfterAllowTrafficHook", "module_kit.deploy_hooks.post_traffic"),
    ):
        hook = raw(template)["Resources"][update[key]["Ref"]]["Properties"]
        assert hook["Handler"] == handler
        # CodeDeploy's role may invoke only functions named CodeDeployHook_*
        assert hook["FunctionName"]["Fn::Sub"].startswith("CodeDeployHook_"), key
        env = hook["Environment"]["Variables"]
        # it may invoke this function (any version: the one deployed is CodeDeploy's target)
        invoke = [p for p in hook["Policies"] if "LambdaInvokePolicy" in p]
        assert invoke == [{"LambdaInvokePolicy": {"FunctionName": {"Ref": function}}}], key
        actions = {
            a
            for p in hook["Policies"]
            for st in p.get("Statement", [])
            for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])
        }
        assert {
            "codedeploy:ListDeploymentTargets",
            "codedeploy:GetDeploymentTarget",
            "codedeploy:PutLifecycleEventHookExecutionStatus",
        } <= actions, key
        smoke = Smoke.load(env["RELAY_HOOK_SMOKE"])
        assert smoke.service == service
        if any(p.identity is not None for p in smoke.probes):
            assert "RELAY_HOOK_IDENTITY_SECRET" in env, key
            assert "secretsmanager:GetSecretValue" in actions, key
        assert "DeploymentPreference" not in hook, "a hook is not deployed through a canary"


@pytest.mark.parametrize(("template", "function", "queue"), WORKERS, ids=[w[1] for w in WORKERS])
def test_a_queue_worker_deploys_as_a_canary_judged_on_its_errors_and_dead_letters(
    template, function, queue
):
    d = deployment(template, function)
    mappings = [
        r for r in d["resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    ]
    polled = [m for m in mappings if m["Properties"]["FunctionName"] == {"Ref": d["alias_id"]}]
    assert polled, "its queue is polled through the alias, so the canary's weights apply"
    errors = dead_letter = False
    for lid, alarm in d["alarms"].items():
        for metric in metrics(alarm):
            if metric["Namespace"] == "AWS/Lambda":
                assert names_the_new_version(metric, d["version"]), lid
                errors = errors or metric["MetricName"] == "Errors"
            if metric["Namespace"] == "AWS/SQS":
                dead_letter = dims(metric)["QueueName"] == {"Fn::GetAtt": [queue, "QueueName"]}
    assert errors, "its new version's errors"
    assert dead_letter, "its queue's dead letters"


def test_every_function_of_every_template_that_takes_calls_deploys_through_codedeploy():
    templates = [Path("template.yaml"), *sorted(Path("modules").glob("*/template.yaml"))]
    judged = {(t, f) for t, f, _ in SERVING} | {(t, f) for t, f, _ in WORKERS}
    for template in templates:
        raw = yaml_parse((ROOT / template).read_text())
        for lid, res in raw["Resources"].items():
            if res["Type"] != "AWS::Serverless::Function":
                continue
            props = res["Properties"]
            if props["Handler"].startswith("module_kit.deploy_hooks."):
                continue
            assert (str(template), lid) in judged, f"{template}: {lid} is not judged"
            assert props["AutoPublishAlias"] == "live", lid
            assert props["DeploymentPreference"]["Type"].startswith("Canary10Percent"), lid
