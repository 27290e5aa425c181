"""Every template lints clean, transforms with SAM offline, and keeps the stage's contract.

The contract (docs/deploy.md): each module is its own stack, deployed alone into a running
stage; stacks publish what others need as SSM parameters named
``/relay/<stage>/<owner>/<name>`` and read what they need from others the same way, in the
deploy order of :data:`relay.cloud.SYSTEM_STACKS` then ``template.yaml``; stateful resources
are retained and deletion-protected; every dead-letter queue has an alarm.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from relay.cloud import ROOT, ROOT_TEMPLATE, SYSTEM_STACKS
from tests.template import NO_VALUE, branches, sub_text

# Deploy order: the platform, the modules, the gateway stack (template.yaml) last.
ORDERED = [path for _, path in SYSTEM_STACKS] + [ROOT_TEMPLATE]
TEMPLATES = [
    ROOT_TEMPLATE,
    ROOT / "platform" / "template.yaml",
    *sorted((ROOT / "modules").glob("*/template.yaml")),
]
MODULES = sorted(p.parent.name for p in (ROOT / "modules").glob("*/template.yaml"))
HTTP_MODULES = ["gatepass", "loads", "message", "navigate"]
# /relay/<stage>/<owner>/<name>, or a loads cell's /relay/<stage>/loads/<cell>/<name>
SSM_NAME = re.compile(
    r"^/relay/\$\{Stage\}/([a-z]+)/(?:(?:\$\{Cell\}|cell-[1-9][0-9]?)/)?([a-z][a-z0-9-]*)$"
)
CELL_SEGMENT = re.compile(r"/cell-[1-9][0-9]?/")
LOADS_CELL_CONDITIONS = {2: "LoadsCell2", 3: "LoadsCell3", 4: "LoadsCell4"}
SSM_REFERENCE = re.compile(r"\{\{resolve:ssm:([^}]*)\}\}")
TABLE_TYPES = (
    "AWS::DynamoDB::Table",
    "AWS::DynamoDB::GlobalTable",
    "AWS::Cognito::UserPool",
    "AWS::SQS::Queue",
)


class _NoManagedPolicies:
    def load(self) -> dict:
        return {}


def _owner(path: Path) -> str:
    """The SSM segment a template publishes under: its module, platform or gateway."""
    if path == ROOT_TEMPLATE:
        return "gateway"
    return path.parent.name


def _load(path: Path) -> dict[str, Any]:
    return yaml_parse(path.read_text())


def _packaged(template: dict) -> dict:
    """What `sam package` would upload: code in S3."""
    out = copy.deepcopy(template)
    for lid, res in out.get("Resources", {}).items():
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = f"s3://relay-artifacts/{lid}.zip"
    return out


def _transformed(path: Path) -> dict:
    template = _packaged(_load(path))
    if "Transform" not in template:
        return template
    return transform(template, {}, _NoManagedPolicies())


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _published(path: Path) -> dict[str, str]:
    """SSM name (with ${Stage}) -> logical id, of every parameter ``path`` publishes: as
    its stack without a cell names it and, for a template with ``Cell``, as a cell's stack
    does (with ``${Cell}``)."""
    out = {}
    for lid, res in _load(path)["Resources"].items():
        if res["Type"] == "AWS::SSM::Parameter":
            name = res["Properties"]["Name"]
            out[sub_text(name)] = lid
            out[sub_text(name, celled=True)] = lid
    return out


def _read(path: Path) -> set[str]:
    """SSM names (with ${Stage}) ``path`` reads by dynamic reference or SSM-typed parameter."""
    template = _load(path)
    names = {m for s in _strings(template["Resources"]) for m in SSM_REFERENCE.findall(s)}
    names |= {m for s in _strings(template.get("Globals", {})) for m in SSM_REFERENCE.findall(s)}
    for spec in template.get("Parameters", {}).values():
        if spec["Type"].startswith("AWS::SSM::Parameter::Value"):
            names.add(spec["Default"])
    return names


def _functions(template: dict) -> dict[str, dict]:
    return {
        lid: res
        for lid, res in template["Resources"].items()
        if res["Type"] == "AWS::Serverless::Function"
    }


def _statements(function: dict) -> Iterator[dict]:
    for policy in function["Properties"].get("Policies", []):
        if isinstance(policy, dict) and "Statement" in policy:
            yield from policy["Statement"]


def _timeout(template: dict, function: dict) -> int:
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", 3)
    return int(function["Properties"].get("Timeout", default))


@pytest.fixture(autouse=True)
def _region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_cfn_lint_passes_on_every_template():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deploy_order_covers_every_template_once():
    assert sorted(map(str, ORDERED)) == sorted(map(str, TEMPLATES))
    assert ORDERED[0] == ROOT / "platform" / "template.yaml"
    assert ORDERED[-1] == ROOT_TEMPLATE


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sam_transform_succeeds_and_no_stack_nests_another(path: Path):
    cfn = _transformed(path)
    types = {r["Type"] for r in cfn["Resources"].values()}
    # Every stack is top-level: modules are wired through SSM, never nested or imported.
    assert "AWS::CloudFormation::Stack" not in types
    assert "AWS::Serverless::Application" not in types
    assert "Fn::ImportValue" not in path.read_text()
    if path.parent.name != "platform":
        assert "AWS::Lambda::Function" in types


@pytest.mark.parametrize("module", HTTP_MODULES)
def test_each_http_module_serves_a_live_and_a_canary_alias_behind_iam_function_urls(module: str):
    cfn = _transformed(ROOT / "modules" / module / "template.yaml")
    by_type: dict[str, list[dict]] = {}
    for res in cfn["Resources"].values():
        by_type.setdefault(res["Type"], []).append(res)
    names = sorted(a["Properties"]["Name"] for a in by_type["AWS::Lambda::Alias"])
    assert names == ["canary", "live"]
    (group,) = by_type["AWS::CodeDeploy::DeploymentGroup"]
    assert group["Properties"]["DeploymentConfigName"]["Fn::Sub"][1]["ConfigName"] == "AllAtOnce"
    assert len(by_type["AWS::Lambda::Url"]) == 2
    assert {u["Properties"]["AuthType"] for u in by_type["AWS::Lambda::Url"]} == {"AWS_IAM"}
    published = _published(ROOT / "modules" / module / "template.yaml")
    for name in ("url", "canary-url", "canary-version", "live-version"):
        assert f"/relay/${{Stage}}/{module}/{name}" in published, name


def test_notifications_worker_reports_partial_batch_failures_and_dead_letters():
    cfn = _transformed(ROOT / "modules" / "notifications" / "template.yaml")
    mapping = next(
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    )
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = cfn["Resources"]["NotificationsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["NotificationsDeadLetterQueue", "Arn"]
    }


# --- SSM: the stage's contract between stacks -----------------------------------------


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_ssm_parameter_is_named_by_the_scheme_under_its_own_stack(path: Path):
    published = _published(path)
    assert published, "every stack publishes what others need"
    for name, lid in published.items():
        match = SSM_NAME.match(name)
        assert match, f"{lid}: {name} is not /relay/${{Stage}}/<owner>/<name>"
        assert match.group(1) == _owner(path), f"{lid}: {name} is another stack's name"
        assert _load(path)["Resources"][lid]["Properties"]["Type"] == "String"


def test_every_http_module_publishes_its_url_function_and_table():
    for module in HTTP_MODULES:
        published = _published(ROOT / "modules" / module / "template.yaml")
        for name in ("url", "function-arn", "table-name", "table-arn"):
            assert f"/relay/${{Stage}}/{module}/{name}" in published, (module, name)
    notifications = _published(ROOT / "modules" / "notifications" / "template.yaml")
    for name in ("queue-url", "queue-name", "queue-arn", "dead-letter-queue-url", "topic-arn"):
        assert f"/relay/${{Stage}}/notifications/{name}" in notifications


def test_every_ssm_name_read_is_published_by_a_stack_deployed_before():
    published_so_far: set[str] = set()
    for path in ORDERED:
        for name in _read(path):
            assert SSM_NAME.match(name), f"{path}: reads {name}, not the scheme"
            # a loads cell's name is what every cell's stack publishes (with ${Cell})
            assert CELL_SEGMENT.sub("/${Cell}/", name) in published_so_far, (
                f"{path.relative_to(ROOT)} reads {name} before any stack publishes it"
            )
        published_so_far |= set(_published(path))


@pytest.mark.parametrize("module", MODULES)
def test_each_module_deploys_alone_into_a_running_stage(module: str):
    path = ROOT / "modules" / module / "template.yaml"
    template = _load(path)
    # Every parameter has a default: `sam deploy -t modules/<m>/template.yaml` needs Stage only.
    for name, spec in template["Parameters"].items():
        assert "Default" in spec, f"{module}: parameter {name} has no default"
    assert template["Parameters"]["Stage"]["Type"] == "String"
    # Nothing of another stack by reference: what it reads from others comes from SSM.
    text = path.read_text()
    assert ".Outputs." not in text
    assert not re.search(r"\b(Notifications|Loads|Gatepass|Navigate|Message)App\b", text)
    resources = set(template["Resources"])
    # and what SAM makes of its functions: "<Function>Url", the published alias
    # ("<Function>.Alias" in a Ref, "<Function>Alias<name>" once transformed)
    for lid, res in template["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            resources.add(f"{lid}Url")
            if "AutoPublishAlias" in res["Properties"]:
                alias = res["Properties"]["AutoPublishAlias"]
                resources |= {f"{lid}.Alias", f"{lid}Alias{alias}"}
    for lid, res in template["Resources"].items():
        depends = res.get("DependsOn", [])
        for ref in _refs(res) | set([depends] if isinstance(depends, str) else depends):
            assert ref in resources or ref in template["Parameters"] or ref.startswith("AWS::"), (
                f"{module}: {lid} refers to {ref}, not its own"
            )
    # It reads other stacks' values only by their SSM names, and publishes its own.
    for name in _read(path):
        assert SSM_NAME.match(name).group(1) != module  # type: ignore[union-attr]


def _refs(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= _refs(v)
    elif isinstance(value, dict):
        for key, v in value.items():
            if key == "Ref" and isinstance(v, str):
                found.add(v)
            elif key == "Fn::GetAtt":
                found.add((v if isinstance(v, list) else v.split("."))[0])
            elif key == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                own = set() if isinstance(v, str) else set(v[1])  # the Sub's own variables
                for part in re.findall(r"\$\{([^}!]+)\}", text):
                    if part not in own:
                        found.add(part.split(".")[0])
                if not isinstance(v, str):
                    found |= _refs(v[1])
            else:
                found |= _refs(v)
    return found


# --- the gateway: discovery through SSM ------------------------------------------------


def test_the_gateway_reads_module_urls_from_ssm_and_may_read_the_stage_path():
    root = _load(ROOT_TEMPLATE)
    routes = next((ROOT / "gateway").rglob("routes.toml")).read_text()
    for lid in ("GatewayFunction", "DeferredReplayFunction"):
        function = root["Resources"][lid]
        env = function["Properties"]["Environment"]["Variables"]
        for module in HTTP_MODULES:
            var = f"RELAY_UPSTREAM_{module.upper()}"
            url = {"Fn::Sub": f"{{{{resolve:ssm:/relay/${{Stage}}/{module}/url}}}}"}
            assert "${" + var + "}" in routes
            if module != "loads":
                assert env[var] == url
                continue
            # loads: its URL, or every cell's as cell-1=<url>,cell-2=<url>,...
            assert _loads_cell_list(env[var], "url", uncelled=url) == "url"
        assert env["RELAY_SSM_PATH"] == {"Fn::Sub": "/relay/${Stage}/"}
        ssm = [s for s in _statements(function) if "ssm:GetParametersByPath" in s["Action"]]
        assert ssm, f"{lid} may read /relay/<stage>/"
        assert set(ssm[0]["Action"]) == {
            "ssm:GetParameter",
            "ssm:GetParameters",
            "ssm:GetParametersByPath",
        }
        assert all(":parameter/relay/${Stage}" in r["Fn::Sub"] for r in ssm[0]["Resource"])


def test_every_function_url_caller_may_invoke_the_url_and_the_function():
    callers = set()
    for path in TEMPLATES:
        for lid, function in _functions(_load(path)).items():
            for statement in _statements(function):
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                if {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"} & set(actions):
                    callers.add(lid)
                    assert {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"} <= set(actions), (
                        lid
                    )
                    resources = [r["Fn::Sub"] for r in branches(statement["Resource"])]
                    for module in HTTP_MODULES:
                        arn = f"{{{{resolve:ssm:/relay/${{Stage}}/{module}/function-arn}}}}"
                        assert arn in resources and arn + ":*" in resources, (lid, module)
                    for k in range(1, 5):  # and every loads cell's
                        arn = f"{{{{resolve:ssm:/relay/${{Stage}}/loads/cell-{k}/function-arn}}}}"
                        assert arn in resources and arn + ":*" in resources, (lid, k)
    assert callers == {"GatewayFunction", "DeferredReplayFunction"}


def test_the_identity_secret_is_read_by_its_arn_parameter():
    root = _load(ROOT_TEMPLATE)
    assert "Default" not in root["Parameters"]["IdentitySigningKeySecretArn"]
    for lid in ("GatewayFunction", "DeferredReplayFunction"):
        (statement,) = [
            s
            for s in _statements(root["Resources"][lid])
            if s["Action"] == "secretsmanager:GetSecretValue"
        ]
        assert statement["Resource"] == {"Ref": "IdentitySigningKeySecretArn"}


# --- posture ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_arn_hard_codes_the_aws_partition(path: Path):
    text = path.read_text()
    assert "arn:aws:" not in text
    assert "arn:aws-" not in text


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_table_user_pool_and_queue_is_retained_and_deletion_protected(path: Path):
    for lid, res in _load(path)["Resources"].items():
        if res["Type"] not in TABLE_TYPES:
            continue
        assert res.get("DeletionPolicy") == "Retain", lid
        assert res.get("UpdateReplacePolicy") == "Retain", lid
        props = res["Properties"]
        if res["Type"] == "AWS::DynamoDB::Table":
            assert props.get("DeletionProtectionEnabled") is True, lid
            assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], lid
        if res["Type"] == "AWS::DynamoDB::GlobalTable":  # per replica (docs/deploy.md, Regions)
            for replica in branches(props["Replicas"]):
                assert replica.get("DeletionProtectionEnabled") is True, lid
                pitr = replica["PointInTimeRecoverySpecification"]
                assert pitr["PointInTimeRecoveryEnabled"] is True, lid
        if res["Type"] == "AWS::Cognito::UserPool":
            assert props.get("DeletionProtection") == "ACTIVE", lid


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_dead_letter_queue_has_a_depth_alarm(path: Path):
    resources = _load(path)["Resources"]
    dead_letter = {
        res["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        for res in resources.values()
        if res["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in res["Properties"]
    }
    alarmed = {
        d["Value"]["Fn::GetAtt"][0]
        for res in resources.values()
        if res["Type"] == "AWS::CloudWatch::Alarm"
        and res["Properties"].get("Namespace") == "AWS/SQS"
        and res["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
        for d in res["Properties"]["Dimensions"]
        if d["Name"] == "QueueName"
    }
    assert dead_letter <= alarmed, dead_letter - alarmed


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_queue_visibility_is_at_least_six_times_its_consumers_timeout(path: Path):
    template = _load(path)
    for lid, function in _functions(template).items():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            queue_id = event["Properties"]["Queue"]["Fn::GetAtt"][0]
            queue = template["Resources"][queue_id]["Properties"]
            assert int(queue["VisibilityTimeout"]) >= 6 * _timeout(template, function), (
                queue_id,
                lid,
            )


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_function_has_reserved_concurrency_from_a_parameter(path: Path):
    template = _load(path)
    for lid, function in _functions(template).items():
        ref = function["Properties"]["ReservedConcurrentExecutions"]["Ref"]
        spec = template["Parameters"][ref]
        assert spec["Type"] == "Number" and int(spec["Default"]) >= 1, lid


def test_the_http_api_writes_access_logs():
    root = _load(ROOT_TEMPLATE)
    settings = root["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]
    group = settings["DestinationArn"]["Fn::GetAtt"][0]
    assert root["Resources"][group]["Type"] == "AWS::Logs::LogGroup"
    assert "$context.requestId" in settings["Format"]


def test_every_checkov_suppression_gives_its_reason():
    for path in TEMPLATES:
        for lid, res in _load(path)["Resources"].items():
            for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), (path, lid)
                assert len(skip.get("comment", "")) > 40, (path, lid, skip["id"])


def test_docs_deploy_lists_the_stacks_in_order_and_every_ssm_name():
    doc = (ROOT / "docs" / "deploy.md").read_text()
    assert "## Stacks and parameters" in doc
    positions = [doc.index(f"`{path.relative_to(ROOT)}`") for path in ORDERED]
    assert positions == sorted(positions), "docs/deploy.md lists the stacks in deploy order"
    for path in TEMPLATES:
        for name in _published(path):
            documented = name.replace("${Stage}", "<stage>").replace("${Cell}", "<cell>")
            assert documented in doc, f"docs/deploy.md does not list {documented}"
        for pname in _load(path).get("Parameters", {}):
            assert f"`{pname}`" in doc, f"docs/deploy.md does not describe {pname}"


# --- cells (docs/deploy.md, Cells) -----------------------------------------------------

LOADS = ROOT / "modules" / "loads" / "template.yaml"
LOADS_READERS = [ROOT_TEMPLATE, ROOT / "modules" / "gatepass" / "template.yaml"]
LOADS_READERS.append(ROOT / "modules" / "navigate" / "template.yaml")


def _loads_cell_list(value: Any, name: str, *, uncelled: Any) -> str:
    """Check a ``!Join [",", ...]`` of the uncelled value or each cell's ``cell-<k>=<value>``
    (the SSM parameter ``name`` of each), one item per cell under its condition; ``name``."""
    sep, items = value["Fn::Join"]
    assert sep == ","
    assert len(items) == 4, "one item per cell, up to 4"
    for k, item in enumerate(items, start=1):
        condition, if_true, if_false = item["Fn::If"]
        assert condition == LOADS_CELL_CONDITIONS[max(k, 2)], (k, condition)
        assert if_true == {
            "Fn::Sub": f"cell-{k}={{{{resolve:ssm:/relay/${{Stage}}/loads/cell-{k}/{name}}}}}"
        }, k
        assert if_false == (uncelled if k == 1 else NO_VALUE), k
    return name


def test_a_loads_stack_is_the_uncelled_one_or_a_cell_publishing_under_its_cell():
    template = _load(LOADS)
    cell = template["Parameters"]["Cell"]
    assert cell["Default"] == ""
    pattern = re.compile(cell["AllowedPattern"])
    assert all(pattern.match(c) for c in ("", "cell-1", "cell-4", "cell-12"))
    assert not any(pattern.match(c) for c in ("cell-0", "cell", "cell-123", "Cell-1", "loads"))
    names = {
        sub_text(n["Properties"]["Name"])
        for n in template["Resources"].values()
        if n["Type"] == "AWS::SSM::Parameter"
    }
    celled = {
        sub_text(n["Properties"]["Name"], celled=True)
        for n in template["Resources"].values()
        if n["Type"] == "AWS::SSM::Parameter"
    }
    assert all(n.startswith("/relay/${Stage}/loads/") for n in names)
    assert {n.replace("/loads/", "/loads/${Cell}/", 1) for n in names} == celled
    # the names that must be unique per stack carry the cell
    hook = template["Resources"]["LoadsPreTrafficHook"]["Properties"]
    assert sub_text(hook["FunctionName"]) == "CodeDeployHook_relay-${Stage}-loads-PreTraffic"
    assert sub_text(hook["FunctionName"], celled=True) == (
        "CodeDeployHook_relay-${Stage}-loads-${Cell}-PreTraffic"
    )
    service = template["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    assert (sub_text(service), sub_text(service, celled=True)) == ("loads", "loads-${Cell}")
    env = template["Resources"]["LoadsFunction"]["Properties"]["Environment"]["Variables"]
    assert env["RELAY_CELL"] == {"Ref": "Cell"}


@pytest.mark.parametrize("path", LOADS_READERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stack_reading_loads_values_takes_the_number_of_cells(path: Path):
    template = _load(path)
    spec = template["Parameters"]["LoadsCells"]
    assert spec["Type"] == "Number" and spec["Default"] == 2
    assert spec["AllowedValues"] == [1, 2, 3, 4]
    assert template["Conditions"] == {
        **{k: v for k, v in template["Conditions"].items() if not k.startswith("LoadsCell")},
        "LoadsCell2": {"Fn::Not": [{"Fn::Equals": [{"Ref": "LoadsCells"}, 1]}]},
        "LoadsCell3": {
            "Fn::Or": [
                {"Fn::Equals": [{"Ref": "LoadsCells"}, 3]},
                {"Fn::Equals": [{"Ref": "LoadsCells"}, 4]},
            ]
        },
        "LoadsCell4": {"Fn::Equals": [{"Ref": "LoadsCells"}, 4]},
    }
    # it reads no loads cell's value but under a cell's condition
    for name in _read(path):
        if CELL_SEGMENT.search(name):
            assert name.split("/")[4] in {"cell-1", "cell-2", "cell-3", "cell-4"}


@pytest.mark.parametrize("module", ["gatepass", "navigate"])
def test_gatepass_and_navigate_read_every_loads_cell_s_table(module: str):
    function = _load(ROOT / "modules" / module / "template.yaml")["Resources"][
        f"{module.capitalize()}Function"
    ]
    env = function["Properties"]["Environment"]["Variables"]
    uncelled = {"Fn::Sub": "{{resolve:ssm:/relay/${Stage}/loads/table-name}}"}
    _loads_cell_list(env["LOADS_TABLE"], "table-name", uncelled=uncelled)
    (read,) = [s for s in _statements(function) if s.get("Sid") == "ReadLoads"]
    arns = {r["Fn::Sub"] for r in branches(read["Resource"])}
    prefixes = ["/relay/${Stage}/loads"] + [
        f"/relay/${{Stage}}/loads/cell-{k}" for k in range(1, 5)
    ]
    assert arns == {
        f"{{{{resolve:ssm:{p}/table-arn}}}}{suffix}"
        for p in prefixes
        for suffix in ("", "/index/*")
    }


def test_the_projector_reads_every_loads_cell_s_stream():
    resources = _load(ROOT_TEMPLATE)["Resources"]
    projector = resources["FallbackProjectorFunction"]["Properties"]
    event = projector["Events"]["LoadsStream"]["Properties"]
    assert event["Stream"] == {
        "Fn::If": [
            "LoadsCell2",
            {"Fn::Sub": "{{resolve:ssm:/relay/${Stage}/loads/cell-1/table-stream-arn}}"},
            {"Fn::Sub": "{{resolve:ssm:/relay/${Stage}/loads/table-stream-arn}}"},
        ]
    }
    mappings = {
        lid: r for lid, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    }
    assert set(mappings) == {f"LoadsCell{k}StreamMapping" for k in (2, 3, 4)}
    same = {k: v for k, v in event.items() if k not in ("Stream", "DestinationConfig")}
    for k in (2, 3, 4):
        mapping = mappings[f"LoadsCell{k}StreamMapping"]
        # the cell's, in the primary region only, as the projector (docs/deploy.md, Regions)
        assert mapping["Condition"] == f"ProjectsLoadsCell{k}"
        assert _load(ROOT_TEMPLATE)["Conditions"][f"ProjectsLoadsCell{k}"] == {
            "Fn::And": [{"Condition": "OwnsGlobalTables"}, {"Condition": f"LoadsCell{k}"}]
        }
        props = mapping["Properties"]
        # the live alias, as the SAM events: a new version's canary projects its share
        assert props["FunctionName"] == {"Ref": "FallbackProjectorFunction.Alias"}
        assert props["EventSourceArn"] == {
            "Fn::Sub": f"{{{{resolve:ssm:/relay/${{Stage}}/loads/cell-{k}/table-stream-arn}}}}"
        }
        assert {key: props[key] for key in same} == same
        assert (
            props["DestinationConfig"]["OnFailure"]["Destination"]
            == (event["DestinationConfig"]["OnFailure"]["Destination"])
        )
    (read,) = [
        s
        for s in _statements(resources["FallbackProjectorFunction"])
        if s.get("Sid") == "ReadLoadsCellStreams"
    ]
    streams = {r["Fn::Sub"] for r in branches(read["Resource"])}
    assert streams == {
        f"{{{{resolve:ssm:/relay/${{Stage}}/loads{cell}/table-stream-arn}}}}"
        for cell in ["", "/cell-1", "/cell-2", "/cell-3", "/cell-4"]
    }
    # and SAM keeps the mappings' conditions
    cfn = _transformed(ROOT_TEMPLATE)["Resources"]
    for k in (2, 3, 4):
        assert cfn[f"LoadsCell{k}StreamMapping"]["Condition"] == f"ProjectsLoadsCell{k}"


def test_the_placement_table_is_the_gateway_stack_s_and_read_only_to_its_functions():
    template = _load(ROOT_TEMPLATE)
    table = template["Resources"]["CellPlacementTable"]
    # global, referred to by name in both regions (docs/deploy.md, Regions)
    assert table["Type"] == "AWS::DynamoDB::GlobalTable"
    name = {"Fn::Sub": "relay-${Stage}-placement"}
    arn = {
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/"
        "relay-${Stage}-placement"
    }
    assert table["Properties"]["TableName"] == name
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "module", "KeyType": "HASH"},
        {"AttributeName": "key", "KeyType": "RANGE"},
    ]
    assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == {
        "module": "S",
        "key": "S",
    }
    for lid in ("GatewayFunction", "DeferredReplayFunction"):
        function = template["Resources"][lid]
        env = function["Properties"]["Environment"]["Variables"]
        assert env["RELAY_PLACEMENT_TABLE"] == name
        on_table = [s for s in _statements(function) if s["Resource"] == arn]
        assert [set(s["Action"]) for s in on_table] == [{"dynamodb:GetItem", "dynamodb:Query"}]
        for policy in function["Properties"]["Policies"]:  # no SAM policy on it either
            assert "relay-${Stage}-placement" not in str(policy) or "Statement" in policy, lid
    assert "/relay/${Stage}/gateway/placement-table-name" in _published(ROOT_TEMPLATE)
    assert template["Outputs"]["CellPlacementTableName"]["Value"] == name
