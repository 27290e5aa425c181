"""The stage's stacks in the emulator: wired through SSM, each module deployable alone.

The local deployer (relay.cloud) deploys the same templates as SAM, in the order of
docs/deploy.md; these tests hold it to what CloudFormation does with the SSM constructs
the templates use.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from relay.cloud import ROOT, SYSTEM_STACKS, LocalCloud, TemplateError
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY

STACKS = dict(SYSTEM_STACKS)


def _parameters(stage: str) -> dict[str, str]:
    ssm = boto3.client("ssm")
    out: dict[str, str] = {}
    for page in ssm.get_paginator("get_parameters_by_path").paginate(
        Path=f"/relay/{stage}/", Recursive=True
    ):
        out.update({p["Name"]: p["Value"] for p in page["Parameters"]})
    return out


def _tables() -> set[str]:
    return set(boto3.client("dynamodb").list_tables()["TableNames"])


def test_the_whole_stage_publishes_every_stacks_parameters_and_wires_the_gateway(aws):
    cloud = LocalCloud(function_urls={"LoadsFunction": "http://127.0.0.1:9001/"})
    root = cloud.deploy_system({"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    published = _parameters("qa")
    owners = {name.split("/")[3] for name in published}
    assert owners == {
        "platform",
        "notifications",
        "loads",
        "gatepass",
        "navigate",
        "message",
        "gateway",
    }
    assert published["/relay/qa/platform/identity-public-key"] == TEST_IDENTITY_PUBLIC_KEY
    # The gateway gets each module's URL as published, and where to re-read it.
    env = cloud.function_env(root, "GatewayFunction")
    assert env["RELAY_UPSTREAM_LOADS"] == "http://127.0.0.1:9001/"
    assert env["RELAY_SSM_PATH"] == "/relay/qa/"
    assert published["/relay/qa/gatepass/url"] == env["RELAY_UPSTREAM_GATEPASS"]
    # Modules get what they read from others through SSM.
    loads = cloud.function_env(root, "LoadsFunction")
    assert loads["NOTIFICATIONS_QUEUE_URL"] == published["/relay/qa/notifications/queue-url"]
    assert loads["RELAY_IDENTITY_PUBLIC_KEY"] == TEST_IDENTITY_PUBLIC_KEY
    gatepass = cloud.function_env(root, "GatepassFunction")
    assert gatepass["LOADS_TABLE"] == published["/relay/qa/loads/table-name"]
    assert (
        root.children["NotificationsApp"].outputs["PushTopicArn"]
        == (published["/relay/qa/notifications/topic-arn"])
    )


def test_a_module_deploys_alone_and_touches_only_its_own_resources(aws):
    # GIVEN a running stage's platform, notifications and (uncelled) loads stacks
    cloud = LocalCloud()
    given = {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
    for name in ("PlatformStack", "NotificationsApp", "LoadsApp"):
        cloud.deploy(STACKS[name], given, name=name)
    before_parameters, before_tables = _parameters("qa"), _tables()
    # WHEN the gatepass stack is deployed alone, with its stage only
    gatepass = cloud.deploy(
        ROOT / "modules" / "gatepass" / "template.yaml", {"Stage": "qa", "LoadsCells": 1}
    )
    # THEN it added its own parameters and tables and changed nothing of the others
    after = _parameters("qa")
    assert {k: v for k, v in after.items() if k in before_parameters} == before_parameters
    assert {k.split("/")[3] for k in set(after) - set(before_parameters)} == {"gatepass"}
    assert _tables() - before_tables == {
        gatepass.resources["GatePassTable"].ref,
        gatepass.resources["GatepassIdempotencyTable"].ref,
    }
    assert (
        cloud.function_env(gatepass, "GatepassFunction")["LOADS_TABLE"]
        == (before_parameters["/relay/qa/loads/table-name"])
    )


def test_a_module_before_the_stacks_it_reads_is_refused_by_name(aws):
    cloud = LocalCloud()
    cloud.deploy(STACKS["PlatformStack"], {"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    with pytest.raises(TemplateError, match="/relay/dev/loads/table-name"):
        cloud.deploy(STACKS["NavigateApp"], {"LoadsCells": 1})


def test_a_reader_of_loads_cells_before_the_cells_is_refused_by_name(aws):
    cloud = LocalCloud()
    cloud.deploy(STACKS["PlatformStack"], {"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    # celled (the templates' default: 2 cells), the first cell's is missing
    with pytest.raises(TemplateError, match="/relay/dev/loads/cell-1/table-name"):
        cloud.deploy(STACKS["NavigateApp"])


def test_a_celled_stage_deploys_a_loads_stack_per_cell_and_gives_its_readers_every_cell(aws):
    urls = {f"LoadsApp/cell-{k}/LoadsFunction": f"http://127.0.0.1:900{k}/" for k in (1, 2)}
    cloud = LocalCloud(function_urls=urls)
    root = cloud.deploy_system(
        {"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}, cells=2
    )
    # two loads stacks, one per cell, in order, each with its own tables and parameters
    assert [n for n in root.children if n.startswith("LoadsApp")] == [
        "LoadsApp/cell-1",
        "LoadsApp/cell-2",
    ]
    assert set(root.cells()) == {"cell-1", "cell-2"}
    published = _parameters("qa")
    assert not any(n.startswith("/relay/qa/loads/") and n.count("/") == 4 for n in published)
    tables = {}
    for cell, stack in root.cells().items():
        env = cloud.function_env(stack, "LoadsFunction")
        assert env["RELAY_CELL"] == cell
        assert env["POWERTOOLS_SERVICE_NAME"] == f"loads-{cell}"
        assert env["LOADS_TABLE"] == published[f"/relay/qa/loads/{cell}/table-name"]
        assert published[f"/relay/qa/loads/{cell}/url"] == urls[f"LoadsApp/{cell}/LoadsFunction"]
        tables[cell] = env["LOADS_TABLE"]
        assert {stack.resources[t].ref for t in ("LoadsTable", "LoadEventsTable")} <= _tables()
    assert tables["cell-1"] != tables["cell-2"]
    # the readers get every cell's value, cell by cell
    for lid in ("GatewayFunction", "DeferredReplayFunction"):
        env = cloud.function_env(root, lid)
        assert env["RELAY_UPSTREAM_LOADS"] == (
            "cell-1=http://127.0.0.1:9001/,cell-2=http://127.0.0.1:9002/"
        )
        assert env["RELAY_PLACEMENT_TABLE"] == root.resources["CellPlacementTable"].ref
    assert published["/relay/qa/gateway/placement-table-name"] == (
        root.resources["CellPlacementTable"].ref
    )
    for lid in ("GatepassFunction", "NavigateFunction"):
        assert cloud.function_env(root, lid)["LOADS_TABLE"] == (
            f"cell-1={tables['cell-1']},cell-2={tables['cell-2']}"
        )
    # the projector reads both cells' streams (and gatepass's and the facilities')
    streams = cloud.stream_event_sources(root, "FallbackProjectorFunction")
    for cell, stack in root.cells().items():
        assert stack.resources["LoadsTable"].attrs["StreamArn"] in streams, cell
    assert len(streams) == 4
    # deployed again from what it was given: the same cells
    assert root.inputs["LoadsCells"] == 2


def test_an_uncelled_stage_reads_the_one_loads_stack(aws):
    cloud = LocalCloud()
    root = cloud.deploy_system({"Stage": "qa", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    assert "LoadsApp" in root.children and not root.cells()
    assert cloud.function_env(root, "LoadsFunction")["RELAY_CELL"] == ""
    table = root.children["LoadsApp"].resources["LoadsTable"]
    assert cloud.function_env(root, "NavigateFunction")["LOADS_TABLE"] == table.ref
    assert (
        cloud.stream_event_sources(root, "FallbackProjectorFunction")[0]
        == (table.attrs["StreamArn"])
    )
    assert len(cloud.stream_event_sources(root, "FallbackProjectorFunction")) == 3


def test_the_local_deployer_refuses_a_value_the_template_does_not_allow(aws):
    cloud = LocalCloud()
    with pytest.raises(ValueError, match="1 to 4 loads cells"):
        cloud.deploy_system({"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}, cells=5)
    cloud.deploy(STACKS["PlatformStack"], {"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    cloud.deploy(STACKS["NotificationsApp"])
    with pytest.raises(TemplateError, match="Cell='cell-0' does not match"):
        cloud.deploy(STACKS["LoadsApp"], {"Cell": "cell-0"})
    with pytest.raises(TemplateError, match="LoadsCells=5 is not one of"):
        cloud.deploy(STACKS["NavigateApp"], {"LoadsCells": 5})


def test_two_stacks_cannot_publish_one_name(aws):
    cloud = LocalCloud()
    cloud.deploy(STACKS["PlatformStack"], {"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY})
    with pytest.raises(TemplateError, match="identity-public-key"):
        LocalCloud(prefix="again").deploy(
            STACKS["PlatformStack"], {"IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
        )


def test_ssm_typed_parameters_and_versioned_references_resolve(aws, tmp_path: Path):
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/relay/dev/x/name", Value="first", Type="String")
    ssm.put_parameter(Name="/relay/dev/x/name", Value="second", Type="String", Overwrite=True)
    template = tmp_path / "template.yaml"
    template.write_text(
        """
Parameters:
  Name:
    Type: AWS::SSM::Parameter::Value<String>
    Default: /relay/dev/x/name
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${Name}-{{resolve:ssm:/relay/dev/x/name:1}}"
"""
    )
    stack = LocalCloud().deploy(template)
    assert stack.parameters["Name"] == "second"
    assert stack.resources["Queue"].attrs["QueueName"] == "second-first"
