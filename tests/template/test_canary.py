"""Releases in the templates.

Each HTTP module's function has two aliases, each behind its own IAM function URL (docs/deploy.md,
Canary releases): every deploy publishes a version to ``canary`` (through CodeDeploy, all at
once, after a pre-traffic smoke of the new version), and ``live`` serves the stack parameter
``LiveVersion`` (a new stack: the version just published). The gateway sends a release's share
of drivers to the canary URL; the release controller promotes by deploying the stack again with
``LiveVersion`` = the canary's version. The gateway and the queue and stream workers still
shift their ``live`` alias through CodeDeploy's canary, judged on the new version alone.

Checked on the SAM translator's output, so the version an alarm or an alias names is the
``AWS::Lambda::Version`` SAM publishes for that deployment.
"""

from __future__ import annotations

import copy
import fnmatch
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from module_kit.deploy_hooks import Smoke
from relay.cloud import LOCAL_FUNCTION_VERSION, ROOT, SYSTEM_STACKS, LocalCloud, TemplateError
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY
from tests.template import branches, sub_text

# HTTP modules: (template, function, EMF service name). Released through two aliases.
MODULES = [
    ("modules/loads/template.yaml", "LoadsFunction", "loads"),
    ("modules/gatepass/template.yaml", "GatepassFunction", "gatepass"),
    ("modules/navigate/template.yaml", "NavigateFunction", "navigate"),
    ("modules/message/template.yaml", "MessageFunction", "message"),
]
GATEWAY = [("template.yaml", "GatewayFunction", "gateway")]
# Functions serving HTTP traffic: each smoked by a pre-traffic hook, judged by version alarms.
SERVING = GATEWAY + MODULES
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
    """What SAM made of ``function``'s deployment preference: its version, the alias
    CodeDeploy moves, its deployment group and the group's alarms."""
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
        and "UpdatePolicy" in r
    ]
    alias = resources[alias_id]
    group_id = alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]["Ref"]
    group = resources[group_id]["Properties"]
    alarms = {
        a["Name"]["Ref"]: resources[a["Name"]["Ref"]]
        for a in group.get("AlarmConfiguration", {}).get("Alarms", [])
    }
    return {
        "version": version,
        "alias": alias,
        "alias_id": alias_id,
        "group": group,
        "config": group["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"],
        "alarms": alarms,
        "resources": resources,
    }


def version_alarms(template: str, function: str) -> dict[str, dict[str, Any]]:
    """The ``<Name>Canary…Alarm``s of a serving function (the pipeline's bake watches them)."""
    prefix = function.removesuffix("Function") + "Canary"
    return {
        lid: r
        for lid, r in transformed(template)["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm" and lid.startswith(prefix)
    }


def aliases(template: str, function: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Alias name -> (logical id, resource) of ``function``, after SAM's transform."""
    return {
        r["Properties"]["Name"]: (lid, r)
        for lid, r in transformed(template)["Resources"].items()
        if r["Type"] == "AWS::Lambda::Alias"
        and r["Properties"]["FunctionName"] == {"Ref": function}
    }


def urls(template: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Logical id of the alias a URL targets -> (the URL's logical id, its properties)."""
    return {
        r["Properties"]["TargetFunctionArn"]["Ref"]: (lid, r["Properties"])
        for lid, r in transformed(template)["Resources"].items()
        if r["Type"] == "AWS::Lambda::Url"
    }


def ssm_values(template: str) -> dict[str, Any]:
    """SSM name (with ${Stage}) -> the value the transformed template publishes."""
    out = {}
    for r in transformed(template)["Resources"].values():
        if r["Type"] == "AWS::SSM::Parameter":
            name = r["Properties"]["Name"]
            out[sub_text(name)] = r["Properties"]["Value"]
    return out


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


def module_of(template: str) -> str:
    return Path(template).parent.name


# --- the HTTP modules: two aliases, two URLs ---------------------------------------------


@pytest.mark.parametrize(("template", "function", "service"), MODULES, ids=[m[1] for m in MODULES])
def test_every_deploy_publishes_to_the_canary_alias_after_a_smoke_and_shifts_no_weights(
    template, function, service
):
    props = raw(template)["Resources"][function]["Properties"]
    assert props["AutoPublishAlias"] == "canary"
    assert "FunctionUrlConfig" not in props, "each alias's URL is its own resource"
    d = deployment(template, function)
    assert d["alias"]["Properties"]["Name"] == "canary"
    assert d["alias"]["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [d["version"], "Version"]}
    # CodeDeploy moves the canary alias at once: the gateway, not the alias, shares traffic
    assert d["config"] == "AllAtOnce"
    assert not d["alarms"], "nothing for CodeDeploy to watch in an all-at-once shift"
    update = d["alias"]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    assert "AfterAllowTrafficHook" not in update, "the controller judges the canary, not a hook"
    hook = raw(template)["Resources"][update["BeforeAllowTrafficHook"]["Ref"]]["Properties"]
    assert hook["Handler"] == "module_kit.deploy_hooks.pre_traffic"
    assert Smoke.load(hook["Environment"]["Variables"]["RELAY_HOOK_SMOKE"]).service == service
    # no weighted shift anywhere in the stack
    for r in transformed(template)["Resources"].values():
        if r["Type"] == "AWS::CodeDeploy::DeploymentGroup":
            name = r["Properties"]["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"]
            assert not name.startswith(("Canary", "Linear")), name
        assert "RoutingConfig" not in r.get("Properties", {}), "no weighted alias"


@pytest.mark.parametrize(("template", "function", "service"), MODULES, ids=[m[1] for m in MODULES])
def test_live_serves_the_live_version_parameter_or_on_a_new_stack_the_version_just_published(
    template, function, service
):
    cfn = transformed(template)
    spec = cfn["Parameters"]["LiveVersion"]
    assert spec["Type"] == "String" and spec["Default"] == ""
    pattern = re.compile(spec["AllowedPattern"])
    assert all(pattern.fullmatch(v) for v in ("", "1", "7", "123"))
    assert not any(pattern.fullmatch(v) for v in ("0", "$LATEST", "live", "7 ", "v7", "-1"))
    assert cfn["Conditions"]["HasLiveVersion"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "LiveVersion"}, ""]}]
    }
    version = deployment(template, function)["version"]
    live_id, live = aliases(template, function)["live"]
    published = {"Fn::GetAtt": [version, "Version"]}
    assert live["Properties"]["FunctionVersion"] == {
        "Fn::If": ["HasLiveVersion", {"Ref": "LiveVersion"}, published]
    }
    # CloudFormation moves it (a promotion is a stack update), never CodeDeploy...
    assert "UpdatePolicy" not in live
    # ...and only once the canary alias's deployment passed its pre-traffic smoke
    canary_id, _ = aliases(template, function)["canary"]
    depends = live.get("DependsOn", [])
    assert canary_id in ([depends] if isinstance(depends, str) else depends)
    # the logical ids SAM gave the alias and URL when live was the published alias: a stack
    # made before canary releases updates them in place and keeps its live URL
    assert live_id == f"{function}Aliaslive"
    assert urls(template)[live_id][0] == f"{function}Url"


@pytest.mark.parametrize(("template", "function", "service"), MODULES, ids=[m[1] for m in MODULES])
def test_each_alias_has_its_own_iam_url_and_both_are_published_with_the_versions(
    template, function, service
):
    module = module_of(template)
    by_target = urls(template)
    live_id, _ = aliases(template, function)["live"]
    canary_id, _ = aliases(template, function)["canary"]
    assert set(by_target) == {live_id, canary_id}, "one URL per alias, none on the function"
    for _, props in by_target.values():
        assert props["AuthType"] == "AWS_IAM"
    values = ssm_values(template)
    prefix = f"/relay/${{Stage}}/{module}/"
    # the gateway's ModuleDirectory keeps reading <module>/url: it is live's
    assert values[prefix + "url"] == {"Fn::GetAtt": [by_target[live_id][0], "FunctionUrl"]}
    assert values[prefix + "canary-url"] == {"Fn::GetAtt": [by_target[canary_id][0], "FunctionUrl"]}
    published = {"Fn::GetAtt": [deployment(template, function)["version"], "Version"]}
    assert values[prefix + "canary-version"] == published
    live = aliases(template, function)["live"][1]
    assert values[prefix + "live-version"] == live["Properties"]["FunctionVersion"]
    # and the function's environment does not pin a version: Lambda says which ran
    # (AWS_LAMBDA_FUNCTION_VERSION, the version an alias resolved to)
    env = raw(template)["Resources"][function]["Properties"]["Environment"]["Variables"]
    assert "RELAY_VERSION" not in env


def test_the_gateway_may_read_every_module_url_and_version_and_invoke_both_aliases():
    gateway = raw("template.yaml")["Resources"]
    for lid in ("GatewayFunction", "DeferredReplayFunction"):
        statements = [
            st
            for p in gateway[lid]["Properties"]["Policies"]
            if isinstance(p, dict)
            for st in p.get("Statement", [])
        ]
        (read,) = [st for st in statements if "ssm:GetParameters" in st["Action"]]
        readable = [
            r["Fn::Sub"].split(":parameter", 1)[1].replace("${Stage}", "prod")
            for r in read["Resource"]
        ]
        (invoke,) = [st for st in statements if "lambda:InvokeFunctionUrl" in st["Action"]]
        invocable = [r["Fn::Sub"] for r in branches(invoke["Resource"])]
        for template, _, _ in MODULES:
            module = module_of(template)
            for name in ("url", "canary-url", "canary-version", "live-version"):
                path = f"/relay/prod/{module}/{name}"
                assert any(fnmatch.fnmatchcase(path, p) for p in readable), (lid, path)
            arn = f"{{{{resolve:ssm:/relay/${{Stage}}/{module}/function-arn}}}}"
            for alias in ("live", "canary"):
                assert any(fnmatch.fnmatchcase(f"{arn}:{alias}", p) for p in invocable), (
                    lid,
                    module,
                    alias,
                )


# --- version alarms and hooks of every serving function ---------------------------------


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_a_serving_function_s_alarms_judge_its_new_version_s_errors_5xx_and_401(
    template, function, service
):
    d = deployment(template, function)
    alarms = version_alarms(template, function)
    assert len(alarms) == 3, sorted(alarms)
    seen = set()
    for lid, alarm in alarms.items():
        assert alarm["Properties"]["TreatMissingData"] == "notBreaching", lid
        for metric in metrics(alarm):
            # every metric of every alarm is the new version's, never the whole function's
            assert names_the_new_version(metric, d["version"]), (lid, metric)
            seen.add((metric["Namespace"], metric["MetricName"]))
            if metric["Namespace"] == "Relay":
                # a loads cell's: loads-<cell> (each cell's versions judged on their own)
                assert sub_text(dims(metric)["service"]) == service, lid
            else:
                assert dims(metric)["FunctionName"] == {"Ref": function}, lid
                # the calls live made: a module's version once promoted, the gateway's canary
                assert dims(metric)["Resource"] == {"Fn::Sub": f"${{{function}}}:live"}, lid
    assert {("AWS/Lambda", "Errors"), ("AWS/Lambda", "Throttles")} <= seen
    assert {("Relay", "Answers"), ("Relay", "Answers5xx"), ("Relay", "Answers401")} <= seen


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_ratio_alarms_judge_a_minute_only_once_the_new_version_served_enough_calls(
    template, function, service
):
    for lid, alarm in version_alarms(template, function).items():
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


@pytest.mark.parametrize(("template", "function", "service"), GATEWAY, ids=[g[1] for g in GATEWAY])
def test_the_gateway_still_shifts_its_live_alias_through_a_codedeploy_canary(
    template, function, service
):
    d = deployment(template, function)
    assert d["alias"]["Properties"]["Name"] == "live"
    assert d["config"].startswith("Canary10Percent")
    assert d["alarms"] == version_alarms(template, function), "its version alarms judge it"


@pytest.mark.parametrize(("template", "function", "service"), SERVING, ids=[s[1] for s in SERVING])
def test_a_serving_function_s_new_version_is_smoked_before_any_traffic(template, function, service):
    d = deployment(template, function)
    update = d["alias"]["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]
    hooks = [("BeforeAllowTrafficHook", "module_kit.deploy_hooks.pre_traffic")]
    if (template, function, service) in GATEWAY:
        hooks.append(("AfterAllowTrafficHook", "module_kit.deploy_hooks.post_traffic"))
    for key, handler in hooks:
        hook = raw(template)["Resources"][update[key]["Ref"]]["Properties"]
        assert hook["Handler"] == handler
        # CodeDeploy's role may invoke only functions named CodeDeployHook_*
        assert sub_text(hook["FunctionName"]).startswith("CodeDeployHook_"), key
        assert sub_text(hook["FunctionName"], celled=True).startswith("CodeDeployHook_"), key
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
    # every hook function of the template belongs to a deployment
    handlers = {
        r["Properties"]["Handler"]
        for r in raw(template)["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
        and r["Properties"]["Handler"].startswith("module_kit.deploy_hooks.")
    }
    if (template, function, service) in MODULES:
        assert handlers == {"module_kit.deploy_hooks.pre_traffic"}, "no post-traffic hook left"


@pytest.mark.parametrize(("template", "function", "queue"), WORKERS, ids=[w[1] for w in WORKERS])
def test_a_queue_worker_deploys_as_a_canary_judged_on_its_errors_and_dead_letters(
    template, function, queue
):
    d = deployment(template, function)
    assert d["config"].startswith("Canary10Percent")
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


def test_every_function_of_every_template_that_takes_calls_is_released_one_way_or_the_other():
    templates = [Path("template.yaml"), *sorted(Path("modules").glob("*/template.yaml"))]
    modules = {(t, f) for t, f, _ in MODULES}
    judged = modules | {(t, f) for t, f, _ in GATEWAY} | {(t, f) for t, f, _ in WORKERS}
    for template in templates:
        raw_template = yaml_parse((ROOT / template).read_text())
        for lid, res in raw_template["Resources"].items():
            if res["Type"] != "AWS::Serverless::Function":
                continue
            props = res["Properties"]
            if props["Handler"].startswith("module_kit.deploy_hooks."):
                continue
            assert (str(template), lid) in judged, f"{template}: {lid} is not judged"
            if (str(template), lid) in modules:
                assert props["AutoPublishAlias"] == "canary", lid
                assert props["DeploymentPreference"]["Type"] == "AllAtOnce", lid
            else:
                assert props["AutoPublishAlias"] == "live", lid
                assert props["DeploymentPreference"]["Type"].startswith("Canary10Percent"), lid


# --- the local stack deploys the same templates ------------------------------------------


@pytest.fixture
def emulated(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield


def _local_loads(**parameters: str) -> tuple[LocalCloud, dict[str, str]]:
    cloud = LocalCloud(
        function_urls={
            "LoadsFunction": "http://127.0.0.1:9001/",
            "LoadsFunction:canary": "http://127.0.0.1:9101/",
        }
    )
    given = {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
    stacks = dict(SYSTEM_STACKS)
    for name in ("PlatformStack", "NotificationsApp"):
        cloud.deploy(stacks[name], given, name=name)
    cloud.deploy(stacks["LoadsApp"], {**given, **parameters}, name="LoadsApp")
    ssm = boto3.client("ssm")
    names = [
        f"/relay/qa/loads/{n}" for n in ("url", "canary-url", "canary-version", "live-version")
    ]
    found = ssm.get_parameters(Names=names)["Parameters"]
    return cloud, {p["Name"].rsplit("/", 1)[1]: p["Value"] for p in found}


def test_the_local_stack_publishes_each_alias_s_url_and_version(emulated):
    _, published = _local_loads()
    assert published == {
        "url": "http://127.0.0.1:9001/",
        "canary-url": "http://127.0.0.1:9101/",
        "canary-version": LOCAL_FUNCTION_VERSION,
        "live-version": LOCAL_FUNCTION_VERSION,
    }


def test_a_local_cell_publishes_each_alias_s_url_under_its_cell(emulated):
    cloud = LocalCloud(
        function_urls={
            "LoadsApp/cell-2/LoadsFunction": "http://127.0.0.1:9002/",
            "LoadsApp/cell-2/LoadsFunction:canary": "http://127.0.0.1:9102/",
        }
    )
    given = {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
    stacks = dict(SYSTEM_STACKS)
    for name in ("PlatformStack", "NotificationsApp"):
        cloud.deploy(stacks[name], given, name=name)
    cloud.deploy(stacks["LoadsApp"], {**given, "Cell": "cell-2"}, name="LoadsApp/cell-2")
    ssm = boto3.client("ssm")
    value = {
        n: ssm.get_parameter(Name=f"/relay/qa/loads/cell-2/{n}")["Parameter"]["Value"]
        for n in ("url", "canary-url")
    }
    assert value == {"url": "http://127.0.0.1:9002/", "canary-url": "http://127.0.0.1:9102/"}
    with pytest.raises(ssm.exceptions.ParameterNotFound):
        ssm.get_parameter(Name="/relay/qa/loads/url")


def test_the_local_stack_publishes_the_live_version_it_was_given(emulated):
    _, published = _local_loads(LiveVersion="7")
    assert published["live-version"] == "7"
    assert published["canary-version"] == LOCAL_FUNCTION_VERSION


def test_a_local_canary_url_without_its_own_process_is_the_function_s(emulated):
    cloud = LocalCloud(function_urls={"NavigateFunction": "http://127.0.0.1:9003/"})
    given = {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY, "LoadsCells": 1}
    stacks = dict(SYSTEM_STACKS)
    for name in ("PlatformStack", "NotificationsApp", "LoadsApp", "NavigateApp"):
        cloud.deploy(stacks[name], given, name=name)
    ssm = boto3.client("ssm")
    for name in ("url", "canary-url"):
        value = ssm.get_parameter(Name=f"/relay/qa/navigate/{name}")["Parameter"]["Value"]
        assert value == "http://127.0.0.1:9003/", name


def test_the_local_deployer_refuses_an_undefined_condition(emulated, tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Resources:
  Name:
    Type: AWS::SSM::Parameter
    Properties:
      Name: /relay/dev/x/name
      Type: String
      Value: !If [Missing, a, b]
"""
    )
    with pytest.raises(TemplateError, match="condition Missing is not defined"):
        LocalCloud().deploy(template)
