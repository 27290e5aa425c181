"""Two regions in the templates (docs/deploy.md, Regions): the critical tables are DynamoDB
global tables created by the primary region's stacks and used by name in both regions, the
gateway reads the routing controls and knows its peer region, and the front door
(frontdoor/template.yaml, not deployed locally) lints like the other templates."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

from relay.cloud import ROOT, ROOT_TEMPLATE, SYSTEM_STACKS
from tests.template import NO_VALUE

FRONTDOOR = ROOT / "frontdoor" / "template.yaml"
LOADS = ROOT / "modules" / "loads" / "template.yaml"
GATEPASS = ROOT / "modules" / "gatepass" / "template.yaml"
# The critical tables, by the template owning them: global; every other table is not.
GLOBAL = {
    LOADS: {"LoadsTable", "LoadEventsTable", "LoadsIdempotencyTable"},
    GATEPASS: {"GatePassTable", "GatepassIdempotencyTable"},
    ROOT_TEMPLATE: {"FallbackStoreTable", "CellPlacementTable", "RoutingControlTable"},
}
REGIONAL = {
    ROOT_TEMPLATE: {"ControlTable", "DeferredWritesLedgerTable"},
    ROOT / "modules" / "message" / "template.yaml": {"MessagesTable", "MessageIdempotencyTable"},
    ROOT / "modules" / "navigate" / "template.yaml": {"FacilitiesTable"},
}
TEMPLATES = [path for _, path in SYSTEM_STACKS] + [ROOT_TEMPLATE]
REGION_PATTERN = "^([a-z]{2}(-gov)?-[a-z]+-[0-9])?$"
PEER = {"Fn::If": ["OwnsGlobalTables", {"Ref": "ReplicaRegion"}, {"Ref": "PrimaryRegion"}]}


class _NoManagedPolicies:
    def load(self) -> dict:
        return {}


def _load(path: Path) -> dict[str, Any]:
    return yaml_parse(path.read_text())


def _tables(path: Path) -> dict[str, dict[str, Any]]:
    return {
        lid: res
        for lid, res in _load(path)["Resources"].items()
        if res["Type"].startswith("AWS::DynamoDB::")
    }


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, v in value.items():
            yield key, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _names_referred(value: Any) -> set[str]:
    """Logical ids a value refers to by Ref, GetAtt or a ${...} of Sub."""
    found: set[str] = set()
    for key, v in _walk(value):
        if key == "Ref" and isinstance(v, str):
            found.add(v)
        elif key == "Fn::GetAtt":
            found.add((v if isinstance(v, list) else v.split("."))[0])
        elif key == "Fn::Sub":
            text = v if isinstance(v, str) else v[0]
            found |= {part.split("}")[0].split(".")[0] for part in text.split("${")[1:]}
    return found


@pytest.fixture(autouse=True)
def _region(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


# --- the front door lints like every template -------------------------------------------


def test_cfn_lint_passes_on_the_front_door():
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run(
        [str(cfn_lint), str(FRONTDOOR)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes_on_the_front_door():
    # `make check` installs checkov in its own venv and runs it over the stacks' templates.
    checkov = ROOT / ".tools" / "checkov" / "bin" / "checkov"
    if not checkov.exists():
        pytest.skip("checkov is installed by `make check` (.tools/checkov)")
    result = subprocess.run(
        [str(checkov), "--quiet", "--compact", "--skip-download", "--framework",
         "cloudformation", "-f", str(FRONTDOOR)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_front_door_is_not_one_of_the_stage_s_stacks():
    # Deployed once per stage, in us-west-2, never locally (nginx plays it there).
    assert FRONTDOOR not in TEMPLATES
    assert "us-west-2" in _load(FRONTDOOR)["Description"]
    assert "locally" in _load(FRONTDOOR)["Description"]


# --- global tables ----------------------------------------------------------------------


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_critical_tables_are_global_tables_and_the_others_are_not(path: Path):
    tables = _tables(path)
    global_ = {lid for lid, r in tables.items() if r["Type"] == "AWS::DynamoDB::GlobalTable"}
    assert global_ == GLOBAL.get(path, set())
    for lid in REGIONAL.get(path, set()):
        assert tables[lid]["Type"] == "AWS::DynamoDB::Table", lid
        assert "Condition" not in tables[lid], lid


@pytest.mark.parametrize("path", list(GLOBAL), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_owners_of_global_tables_take_the_regions_and_their_conditions(path: Path):
    template = _load(path)
    for name in ("PrimaryRegion", "ReplicaRegion"):
        spec = template["Parameters"][name]
        assert spec["Type"] == "String" and spec["Default"] == "", name
        assert spec["AllowedPattern"] == REGION_PATTERN, name
    assert template["Conditions"]["HasReplica"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReplicaRegion"}, ""]}]
    }
    assert template["Conditions"]["OwnsGlobalTables"] == {
        "Fn::Or": [
            {"Fn::Equals": [{"Ref": "PrimaryRegion"}, ""]},
            {"Fn::Equals": [{"Ref": "PrimaryRegion"}, {"Ref": "AWS::Region"}]},
        ]
    }


@pytest.mark.parametrize("path", list(GLOBAL), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_global_table_is_the_primary_s_with_a_replica_a_stream_and_a_fixed_name(path: Path):
    for lid in GLOBAL[path]:
        table = _tables(path)[lid]
        assert table["Condition"] == "OwnsGlobalTables", lid
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain", lid
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST", lid
        assert props["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}, lid
        # deterministic: the other region's stacks find the replica by it
        name = props["TableName"]["Fn::Sub"]
        text = name if isinstance(name, str) else name[0]
        assert text.startswith("relay-${Stage}-"), (lid, text)
        here, other = props["Replicas"]
        assert here["Region"] == {"Ref": "AWS::Region"}, lid
        condition, replica, otherwise = other["Fn::If"]
        assert (condition, otherwise) == ("HasReplica", NO_VALUE), lid
        assert replica["Region"] == {"Ref": "ReplicaRegion"}, lid
        for each in (here, replica):
            assert {k: v for k, v in each.items() if k != "Region"} == {
                "DeletionProtectionEnabled": True,
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            }, lid
        assert table["Metadata"]["checkov"]["skip"][0]["id"] == "CKV_AWS_119", lid
    names = [str(_tables(path)[lid]["Properties"]["TableName"]) for lid in GLOBAL[path]]
    assert len(set(names)) == len(names)


def test_the_global_tables_keep_their_indexes_ttl_and_encryption():
    loads, gatepass, root = _tables(LOADS), _tables(GATEPASS), _tables(ROOT_TEMPLATE)
    for table in (loads["LoadsTable"], gatepass["GatePassTable"]):
        (index,) = table["Properties"]["GlobalSecondaryIndexes"]
        assert index["IndexName"] == "by_driver"
    for table in (loads["LoadsIdempotencyTable"], gatepass["GatepassIdempotencyTable"]):
        ttl = table["Properties"]["TimeToLiveSpecification"]
        assert ttl == {"AttributeName": "expiration", "Enabled": True}
    ttl = root["FallbackStoreTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}
    for lid in GLOBAL[ROOT_TEMPLATE]:
        sse = root[lid]["Properties"]["SSESpecification"]
        assert sse == {"SSEEnabled": True, "SSEType": "KMS"}, lid


@pytest.mark.parametrize("path", list(GLOBAL), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_refers_to_a_global_table_but_by_its_name(path: Path):
    # A Ref or GetAtt of the table exists only in the primary region's stack: in the other
    # region the same template must read the replica, by name. Only what exists in the
    # primary region alone (a stream's ARN) may refer to the resource.
    template = _load(path)
    for lid, res in template["Resources"].items():
        referred = _names_referred(res) & GLOBAL[path]
        if res.get("Condition") == "OwnsGlobalTables":
            assert not referred or "StreamArn" in str(res), lid
            continue
        assert not referred, f"{lid} refers to {referred}"
    for name, output in template.get("Outputs", {}).items():
        assert not _names_referred(output) & GLOBAL[path], name


PRIMARY_ONLY = {
    "OwnsGlobalTables",
    "ProjectsLoadsCell2",
    "ProjectsLoadsCell3",
    "ProjectsLoadsCell4",
}


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_stream_is_read_and_published_in_the_primary_region_only(path: Path):
    # A stream's ARN is known only where its table is a stack resource. (navigate's
    # facilities table is regional: its stream exists in every region.)
    if path.parent.name == "navigate":
        return
    for lid, res in _load(path)["Resources"].items():
        if "StreamArn" in str(res) or "table-stream-arn" in str(res):
            assert res.get("Condition") in PRIMARY_ONLY, lid


def test_the_projector_and_everything_of_it_run_in_the_primary_region_only():
    template = _load(ROOT_TEMPLATE)
    resources = template["Resources"]
    for lid in (
        "FallbackProjectorFunction",
        "FallbackProjectionDeadLetterQueue",
        "FallbackProjectionDeadLetterAlarm",
        "FallbackProjectorCanaryErrorsAlarm",
        "FallbackProjectionCanaryDeadLetterAlarm",
    ):
        assert resources[lid]["Condition"] == "OwnsGlobalTables", lid
    # everything referring to the projector is conditional too
    for lid, res in resources.items():
        if _names_referred(res) & {"FallbackProjectorFunction", "FallbackProjectorFunction.Alias"}:
            assert "Condition" in res, lid
    # and SAM carries the condition to what it makes of the function (mappings, alias,
    # role, and with PassthroughCondition its deployment group, which names the alarms)
    for res in template["Resources"].values():  # as `sam package` leaves it: code in S3
        if res["Type"] == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://relay-artifacts/code.zip"
    cfn = transform(template, {}, _NoManagedPolicies())["Resources"]
    for lid, res in cfn.items():
        if lid.startswith("FallbackProjector"):
            assert res.get("Condition") == "OwnsGlobalTables", lid
    assert cfn["FallbackProjectorFunctionDeploymentGroup"]["Condition"] == "OwnsGlobalTables"


# --- the gateway: routing controls and its peer -----------------------------------------


def test_the_gateway_reads_the_routing_controls_and_knows_its_peer_region():
    template = _load(ROOT_TEMPLATE)
    routing = {"Fn::Sub": "relay-${Stage}-routing"}
    table = template["Resources"]["RoutingControlTable"]["Properties"]
    assert table["TableName"] == routing
    assert table["KeySchema"] == [
        {"AttributeName": "kind", "KeyType": "HASH"},
        {"AttributeName": "name", "KeyType": "RANGE"},
    ]
    gateway = template["Resources"]["GatewayFunction"]["Properties"]
    replayer = template["Resources"]["DeferredReplayFunction"]["Properties"]
    for function in (gateway, replayer):
        assert function["Environment"]["Variables"]["RELAY_ROUTING_TABLE"] == routing
    env = gateway["Environment"]["Variables"]
    assert env["RELAY_REGION_PEERS"] == {"Fn::If": ["HasReplica", PEER, ""]}
    # the gateway pulls the levers (read and write), the replayer only reads them
    assert {"DynamoDBCrudPolicy": {"TableName": routing}} in gateway["Policies"]
    assert {"DynamoDBReadPolicy": {"TableName": routing}} in replayer["Policies"]
    assert not any(routing in p.values() for p in replayer["Policies"] if "DynamoDBCrudPolicy" in p)
    # and may call its peer region's module URLs and read its stage's parameters
    (peer,) = [p for p in gateway["Policies"] if "Fn::If" in p]
    condition, policy, otherwise = peer["Fn::If"]
    assert (condition, otherwise) == ("HasReplica", NO_VALUE)
    invoke, ssm = policy["Statement"]
    assert set(invoke["Action"]) == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    assert invoke["Resource"] == [
        {
            "Fn::Sub": [
                "arn:${AWS::Partition}:lambda:${Peer}:${AWS::AccountId}:function:relay-${Stage}-*",
                {"Peer": PEER},
            ]
        }
    ]
    assert "ssm:GetParameters" in ssm["Action"]
    assert not {"ssm:PutParameter", "ssm:GetParametersByPath"} & set(ssm["Action"])
    assert ssm["Resource"] == [
        {
            "Fn::Sub": [
                "arn:${AWS::Partition}:ssm:${Peer}:${AWS::AccountId}:parameter/relay/${Stage}/*",
                {"Peer": PEER},
            ]
        }
    ]
    # the existing variables stay
    for name in ("RELAY_CONTROL_TABLE", "RELAY_FALLBACK_STORE_TABLE", "RELAY_PLACEMENT_TABLE"):
        assert name in env


def test_the_regional_tables_say_why_they_are_not_global():
    text = ROOT_TEMPLATE.read_text()
    for lid in ("ControlTable", "DeferredWritesLedgerTable"):
        before = text[: text.index(f"  {lid}:\n")]
        assert "Not global" in before[before.rindex("\n\n") :], lid


# --- the front door ---------------------------------------------------------------------


def _frontdoor_by_type() -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for lid, res in _load(FRONTDOOR)["Resources"].items():
        out.setdefault(res["Type"], {})[lid] = res
    return out


def test_the_front_door_has_a_routing_control_per_region_and_never_none_serving():
    template = _load(FRONTDOOR)
    assert set(template["Parameters"]) >= {
        "HostedZoneId",
        "DomainName",
        "PrimaryRegion",
        "SecondaryRegion",
        "PrimaryApiDomain",
        "SecondaryApiDomain",
    }
    by_type = _frontdoor_by_type()
    assert len(by_type["AWS::Route53RecoveryControl::Cluster"]) == 1
    assert len(by_type["AWS::Route53RecoveryControl::ControlPanel"]) == 1
    controls = by_type["AWS::Route53RecoveryControl::RoutingControl"]
    assert set(controls) == {"PrimaryRoutingControl", "SecondaryRoutingControl"}
    (rule,) = by_type["AWS::Route53RecoveryControl::SafetyRule"].values()
    props = rule["Properties"]
    assert props["RuleConfig"] == {"Type": "ATLEAST", "Threshold": 1, "Inverted": False}
    asserted = props["AssertionRule"]["AssertedControls"]
    assert asserted == [
        {"Fn::GetAtt": [lid, "RoutingControlArn"]}
        for lid in ("PrimaryRoutingControl", "SecondaryRoutingControl")
    ]
    # one recovery-control health check per routing control
    checks = by_type["AWS::Route53::HealthCheck"]
    watched = {}
    for lid, check in checks.items():
        config = check["Properties"]["HealthCheckConfig"]
        assert config["Type"] == "RECOVERY_CONTROL", lid
        watched[config["RoutingControlArn"]["Fn::GetAtt"][0]] = lid
    assert set(watched) == set(controls)
    outputs = template["Outputs"]
    for lid in controls:
        assert outputs[f"{lid}Arn"]["Value"] == {"Fn::GetAtt": [lid, "RoutingControlArn"]}
    assert "ClusterArn" in outputs


def test_each_region_s_hostname_fails_over_to_the_other_region():
    by_type = _frontdoor_by_type()
    checks = {
        check["Properties"]["HealthCheckConfig"]["RoutingControlArn"]["Fn::GetAtt"][0]: lid
        for lid, check in by_type["AWS::Route53::HealthCheck"].items()
    }
    check_of = {
        "Primary": checks["PrimaryRoutingControl"],
        "Secondary": checks["SecondaryRoutingControl"],
    }
    records: dict[str, dict[str, dict[str, Any]]] = {}
    for res in by_type["AWS::Route53::RecordSet"].values():
        props = res["Properties"]
        records.setdefault(props["Name"]["Fn::Sub"], {})[props["Failover"]] = props
    assert set(records) == {
        "${PrimaryRegion}.api.${DomainName}",
        "${SecondaryRegion}.api.${DomainName}",
    }
    for home, other in (("Primary", "Secondary"), ("Secondary", "Primary")):
        pair = records[f"${{{home}Region}}.api.${{DomainName}}"]
        assert set(pair) == {"PRIMARY", "SECONDARY"}
        for failover, region in (("PRIMARY", home), ("SECONDARY", other)):
            record = pair[failover]
            assert record["Type"] == "CNAME" and int(record["TTL"]) <= 60, (home, failover)
            assert record["ResourceRecords"] == [{"Ref": f"{region}ApiDomain"}]
            assert record["HealthCheckId"] == {"Ref": check_of[region]}, (home, failover)
            assert record["HostedZoneId"] == {"Ref": "HostedZoneId"}
