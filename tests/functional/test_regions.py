"""Two regions in the emulator (docs/deploy.md, Regions): one LocalCloud per region, the
primary's deployed first. Its global tables are created in both regions; the second
region's stacks create none and use the replicas by name, with their own functions, URLs
and parameters."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from relay.cloud import GLOBAL_TABLE, LocalCloud, StackResult, TemplateError
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY

PRIMARY, SECOND = "us-east-1", "us-west-2"
REGIONS = {"PrimaryRegion": PRIMARY, "ReplicaRegion": SECOND}
STAGE = {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
# The critical tables of a stage with two loads cells, by the names the templates give them.
GLOBAL_TABLES = {
    "relay-qa-loads-cell-1",
    "relay-qa-loads-cell-1-events",
    "relay-qa-loads-cell-1-idempotency",
    "relay-qa-loads-cell-2",
    "relay-qa-loads-cell-2-events",
    "relay-qa-loads-cell-2-idempotency",
    "relay-qa-gatepass",
    "relay-qa-gatepass-idempotency",
    "relay-qa-fallback-store",
    "relay-qa-placement",
    "relay-qa-routing",
}
MODULE_FUNCTIONS = ("GatepassFunction", "NavigateFunction", "MessageFunction")


def _urls(region: str) -> dict[str, str]:
    urls = {f"LoadsApp/cell-{k}/LoadsFunction": f"http://{region}.loads-{k}/" for k in (1, 2)}
    return urls | {lid: f"http://{region}.{lid}/" for lid in MODULE_FUNCTIONS}


def _tables(region: str) -> set[str]:
    return set(boto3.client("dynamodb", region_name=region).list_tables()["TableNames"])


def _parameters(region: str) -> dict[str, str]:
    ssm = boto3.client("ssm", region_name=region)
    out: dict[str, str] = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path="/relay/qa/", Recursive=True
    ):
        out.update({p["Name"]: p["Value"] for p in page["Parameters"]})
    return out


def _global_resources(stack: StackResult) -> set[str]:
    """Logical ids of this stack tree's global tables, deployed or not."""
    out = {
        f"{stack.name}/{lid}"
        for lid, res in stack.template["Resources"].items()
        if res["Type"] == GLOBAL_TABLE
    }
    for child in stack.children.values():
        out |= _global_resources(child)
    return out


def _deployed(stack: StackResult) -> set[str]:
    out = {f"{stack.name}/{lid}" for lid in stack.resources}
    for child in stack.children.values():
        out |= _deployed(child)
    return out


@pytest.fixture
def two_regions(aws) -> tuple[LocalCloud, StackResult, LocalCloud, StackResult, set[str]]:
    primary = LocalCloud(region=PRIMARY, function_urls=_urls(PRIMARY))
    first = primary.deploy_system({**STAGE, **REGIONS}, cells=2)
    before = _tables(SECOND)
    second = LocalCloud(region=SECOND, function_urls=_urls(SECOND))
    key = first.children["GatepassApp"].outputs["SigningKeyArn"]  # the primary's, replicated
    other = second.deploy_system({**STAGE, **REGIONS, "PrimarySigningKeyArn": key}, cells=2)
    return primary, first, second, other, before


def test_both_regions_sign_passes_with_one_multi_region_key(two_regions):
    """A pass signed in either region verifies in both, and the JWKS they publish is one."""
    _, first, _, other, _ = two_regions
    here = first.children["GatepassApp"]
    there = other.children["GatepassApp"]
    assert "SigningKey" in here.resources and "SigningKeyReplica" not in here.resources
    assert "SigningKeyReplica" in there.resources and "SigningKey" not in there.resources
    primary_arn, replica_arn = here.outputs["SigningKeyArn"], there.outputs["SigningKeyArn"]
    assert primary_arn.split(":")[3] == PRIMARY and replica_arn.split(":")[3] == SECOND
    assert primary_arn.split("/")[1] == replica_arn.split("/")[1]  # one mrk- key id
    keys = [
        boto3.client("kms", region_name=r).get_public_key(KeyId=arn)["PublicKey"]
        for r, arn in ((PRIMARY, primary_arn), (SECOND, replica_arn))
    ]
    assert keys[0] == keys[1]


def test_the_primary_makes_every_global_table_in_both_regions_and_the_second_makes_none(
    two_regions,
):
    _, first, _, other, before_second = two_regions
    # the primary's stacks created each critical table in both regions, same name
    assert set(first.global_tables()) == GLOBAL_TABLES
    assert _tables(PRIMARY) >= GLOBAL_TABLES
    assert before_second >= GLOBAL_TABLES  # before the second region deployed anything
    # the second region's stacks created none of them (their condition is false there)
    assert other.global_tables() == []
    assert not _deployed(other) & _global_resources(other)
    assert {lid.rsplit("/", 1)[1] for lid in _global_resources(other)} <= {
        lid for stack in [other, *other.children.values()] for lid in stack.skipped
    }
    made_by_second = _tables(SECOND) - before_second
    assert made_by_second and not made_by_second & GLOBAL_TABLES
    # (its own regional tables: control, ledger, facilities, messages)
    assert {"relay-ControlTable", "relay-DeferredWritesLedgerTable"} <= made_by_second
    # each replica has its stream, with both images (replication needs them)
    for region in (PRIMARY, SECOND):
        ddb = boto3.client("dynamodb", region_name=region)
        for name in GLOBAL_TABLES:
            table = ddb.describe_table(TableName=name)["Table"]
            assert table["StreamSpecification"] == {
                "StreamEnabled": True,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            }, (region, name)
            assert f":{region}:" in table["TableArn"]
        indexes = ddb.describe_table(TableName="relay-qa-loads-cell-1")["Table"]
        assert [i["IndexName"] for i in indexes["GlobalSecondaryIndexes"]] == ["by_driver"]
        ttl = ddb.describe_time_to_live(TableName="relay-qa-gatepass-idempotency")
        assert ttl["TimeToLiveDescription"]["AttributeName"] == "expiration", region
    # GetAtt is this region's replica: the primary's stream ARNs are its own region's
    loads = first.children["LoadsApp/cell-1"].resources["LoadsTable"]
    assert loads.ref == "relay-qa-loads-cell-1"
    assert loads.replicas == [PRIMARY, SECOND]
    assert f":{PRIMARY}:" in loads.attrs["Arn"] and f":{PRIMARY}:" in loads.attrs["StreamArn"]


def test_each_region_s_stacks_name_the_same_tables_and_their_own_functions(two_regions):
    primary, first, second, other, _ = two_regions
    for cloud, root, region, peer in (
        (primary, first, PRIMARY, SECOND),
        (second, other, SECOND, PRIMARY),
    ):
        published = _parameters(region)
        # the same table names in both regions' parameters and environments
        for cell in ("cell-1", "cell-2"):
            assert published[f"/relay/qa/loads/{cell}/table-name"] == f"relay-qa-loads-{cell}"
            assert published[f"/relay/qa/loads/{cell}/table-arn"] == (
                f"arn:aws:dynamodb:{region}:123456789012:table/relay-qa-loads-{cell}"
            )
            assert published[f"/relay/qa/loads/{cell}/load-events-table-name"] == (
                f"relay-qa-loads-{cell}-events"
            )
            env = cloud.function_env(root.cells()[cell], "LoadsFunction")
            assert env["LOADS_TABLE"] == f"relay-qa-loads-{cell}"
            assert env["IDEMPOTENCY_TABLE"] == f"relay-qa-loads-{cell}-idempotency"
            # ... and their own function URLs
            assert published[f"/relay/qa/loads/{cell}/url"] == f"http://{region}.loads-{cell[-1]}/"
        assert published["/relay/qa/gatepass/table-name"] == "relay-qa-gatepass"
        assert published["/relay/qa/gateway/fallback-store-table-name"] == (
            "relay-qa-fallback-store"
        )
        assert published["/relay/qa/gateway/routing-table-name"] == "relay-qa-routing"
        for lid in MODULE_FUNCTIONS:
            module = lid.removesuffix("Function").lower()
            assert published[f"/relay/qa/{module}/url"] == f"http://{region}.{lid}/"
        gateway = cloud.function_env(root, "GatewayFunction")
        assert gateway["RELAY_ROUTING_TABLE"] == "relay-qa-routing"
        assert gateway["RELAY_REGION_PEERS"] == peer
        assert gateway["RELAY_FALLBACK_STORE_TABLE"] == "relay-qa-fallback-store"
        assert gateway["RELAY_PLACEMENT_TABLE"] == "relay-qa-placement"
        assert gateway["RELAY_UPSTREAM_GATEPASS"] == f"http://{region}.GatepassFunction/"
        assert gateway["RELAY_UPSTREAM_LOADS"] == (
            f"cell-1=http://{region}.loads-1/,cell-2=http://{region}.loads-2/"
        )
        replayer = cloud.function_env(root, "DeferredReplayFunction")
        assert replayer["RELAY_ROUTING_TABLE"] == "relay-qa-routing"
        assert "RELAY_REGION_PEERS" not in replayer
        assert cloud.function_env(root, "GatepassFunction")["LOADS_TABLE"] == (
            "cell-1=relay-qa-loads-cell-1,cell-2=relay-qa-loads-cell-2"
        )


def test_the_projector_runs_in_the_primary_region_only(two_regions):
    primary, first, second, other, _ = two_regions
    streams = primary.stream_event_sources(first, "FallbackProjectorFunction")
    assert len(streams) == 4  # two loads cells, gatepass, facilities
    assert all(f":{PRIMARY}:" in s for s in streams)
    assert "FallbackProjectorFunction" in first.functions()
    # the second region has no projector, no mapping, and publishes no stream ARN
    assert "FallbackProjectorFunction" not in other.functions()
    assert second.stream_event_sources(other, "FallbackProjectorFunction") == []
    assert {"FallbackProjectorFunction", "FallbackProjectionDeadLetterQueue"} <= other.skipped
    published = _parameters(SECOND)
    stream_parameters = {n for n in published if n.endswith("/table-stream-arn")}
    assert stream_parameters == {"/relay/qa/navigate/table-stream-arn"}  # regional table


def test_a_single_region_stage_deploys_as_before(aws):
    cloud = LocalCloud()
    root = cloud.deploy_system(STAGE)
    # each global table has one replica: nothing to replicate, no peer
    assert root.global_tables() == []
    assert root.skipped == {f"LoadsCell{k}StreamMapping" for k in (2, 3, 4)}  # uncelled
    loads = root.children["LoadsApp"].resources["LoadsTable"]
    assert loads.replicas == [PRIMARY]
    assert loads.ref == "relay-qa-loads" and loads.ref in _tables(PRIMARY)
    assert _tables(SECOND) == set()
    gateway = cloud.function_env(root, "GatewayFunction")
    assert gateway["RELAY_REGION_PEERS"] == ""
    assert gateway["RELAY_ROUTING_TABLE"] == root.resources["RoutingControlTable"].ref
    assert gateway["RELAY_FALLBACK_STORE_TABLE"] == root.resources["FallbackStoreTable"].ref
    streams = cloud.stream_event_sources(root, "FallbackProjectorFunction")
    assert streams[0] == loads.attrs["StreamArn"] and len(streams) == 3


def test_a_global_table_must_have_a_replica_in_the_stack_s_region(aws, tmp_path: Path):
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Resources:
  Table:
    Type: AWS::DynamoDB::GlobalTable
    Properties:
      TableName: elsewhere
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      StreamSpecification: {StreamViewType: NEW_AND_OLD_IMAGES}
      Replicas: [{Region: us-west-2}]
"""
    )
    with pytest.raises(TemplateError, match="no replica in the stack's region us-east-1"):
        LocalCloud().deploy(template)
    assert _tables(SECOND) == set()
