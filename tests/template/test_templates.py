"""template.yaml and every module template lint clean and transform with SAM, offline."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from relay.cloud import ROOT

TEMPLATES = [ROOT / "template.yaml", *sorted((ROOT / "modules").glob("*/template.yaml"))]


class _NoManagedPolicies:
    def load(self) -> dict:
        return {}


def _packaged(template: dict) -> dict:
    """What `sam package` would upload: code in S3, nested templates at URLs."""
    out = copy.deepcopy(template)
    for lid, res in out.get("Resources", {}).items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::Serverless::Function":
            props["CodeUri"] = f"s3://relay-artifacts/{lid}.zip"
        if res["Type"] == "AWS::Serverless::Application":
            props["Location"] = f"https://relay-artifacts.s3.amazonaws.com/{lid}.yaml"
    return out


@pytest.fixture(autouse=True)
def _region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def test_cfn_lint_passes_on_every_template():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), *map(str, TEMPLATES)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sam_transform_succeeds(path: Path):
    cfn = transform(_packaged(yaml_parse(path.read_text())), {}, _NoManagedPolicies())
    types = {r["Type"] for r in cfn["Resources"].values()}
    # Every template deploys functions; only the root one nests the modules as stacks.
    assert "AWS::Lambda::Function" in types
    assert ("AWS::CloudFormation::Stack" in types) is (path == ROOT / "template.yaml")


@pytest.mark.parametrize("module", ["loads", "gatepass", "navigate", "message"])
def test_each_http_module_deploys_as_a_canary_behind_an_iam_function_url(module: str):
    path = ROOT / "modules" / module / "template.yaml"
    cfn = transform(_packaged(yaml_parse(path.read_text())), {}, _NoManagedPolicies())
    by_type: dict[str, list[dict]] = {}
    for res in cfn["Resources"].values():
        by_type.setdefault(res["Type"], []).append(res)
    assert by_type["AWS::Lambda::Alias"], "AutoPublishAlias gives the canary an alias"
    assert by_type["AWS::CodeDeploy::DeploymentGroup"][0]["Properties"]["AlarmConfiguration"]
    assert by_type["AWS::Lambda::Url"][0]["Properties"]["AuthType"] == "AWS_IAM"


def test_notifications_worker_reports_partial_batch_failures_and_dead_letters():
    path = ROOT / "modules" / "notifications" / "template.yaml"
    cfn = transform(_packaged(yaml_parse(path.read_text())), {}, _NoManagedPolicies())
    mapping = next(
        r for r in cfn["Resources"].values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
    )
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = cfn["Resources"]["NotificationsQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["NotificationsDeadLetterQueue", "Arn"]
    }


def test_root_template_wires_every_module_url_into_the_gateway():
    root = yaml_parse((ROOT / "template.yaml").read_text())
    env = root["Resources"]["GatewayFunction"]["Properties"]["Environment"]["Variables"]
    routes = (ROOT / "gateway" / "routes.toml").read_text()
    for module in ("LOADS", "GATEPASS", "NAVIGATE", "MESSAGE"):
        assert f"RELAY_UPSTREAM_{module}" in env
        assert "${RELAY_UPSTREAM_" + module + "}" in routes
