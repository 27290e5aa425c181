"""The local front door's controller (relay/frontdoor.py) and the two-region stack's plan
(relay/stack.py), without nginx or any process of the stack.

The controller runs on an injected loader, clock and apply: no sleeps, no nginx. The
routing controls are read from moto (in-process) for the replica fallback, and the plan
deploys both regions' stacks into moto's server in this process, then makes (never
starts) every process.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import boto3
import pytest

from gateway.regions.control import RegionControl, RoutingControls
from relay import frontdoor
from relay.frontdoor import FrontDoorController, NginxFrontDoor, RoutingReader, Switch
from relay.stack import FRONTDOOR_NAME, REPLICATOR_NAME, LocalStack, free_port

REGIONS = ["us-east-1", "us-west-2"]
TABLE = "relay-test-routing"
EAST, WEST = (frontdoor.hostname(r) for r in REGIONS)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Controls:
    """The routing controls as the controller reads them; ``broken`` makes a read fail."""

    def __init__(self) -> None:
        self.controls: dict[str, RegionControl] = {}
        self.broken = False

    def __call__(self) -> Mapping[str, RegionControl]:
        if self.broken:
            raise ConnectionError("no replica answers")
        return dict(self.controls)

    def set(self, region: str, serving: bool, at: float) -> None:
        revision = self.controls.get(region, RegionControl(region)).revision + 1
        self.controls[region] = RegionControl(
            region, serving=serving, revision=revision, updated_at=at
        )


class Nginx:
    """apply(): records each configuration put into service; ``down`` makes it fail."""

    def __init__(self, clock: Clock, reload_seconds: float = 0.03) -> None:
        self.clock = clock
        self.reload_seconds = reload_seconds
        self.applied: list[dict[str, str]] = []
        self.down = False

    def __call__(self, targets: dict[str, str]) -> float | None:
        self.applied.append(targets)
        if self.down:
            return None
        self.clock.now += self.reload_seconds
        return self.clock.now


@pytest.fixture
def parts():
    clock = Clock()
    controls, nginx = Controls(), Nginx(clock)
    switches: list[Switch] = []
    said: list[str] = []
    controller = FrontDoorController(
        REGIONS, controls, nginx, clock=clock, record=switches.append, say=said.append
    )
    return clock, controls, nginx, switches, said, controller


def test_nothing_moves_while_every_region_serves(parts):
    _clock, controls, nginx, switches, _said, controller = parts
    assert controller.tick() is None
    controls.set("us-west-2", True, at=1.0)  # a restore of a serving region: still serving
    assert controller.tick() is None
    assert nginx.applied == [] and switches == []


def test_an_evacuation_moves_the_region_s_hostname_and_a_restore_brings_it_home(parts):
    clock, controls, nginx, switches, said, controller = parts
    pulled = clock.now
    controls.set("us-east-1", False, at=pulled)
    clock.now += 0.15  # the next poll
    switch = controller.tick()
    assert switch is not None and switch.ok
    assert nginx.applied == [{"us-east-1": "us-west-2", "us-west-2": "us-west-2"}]
    assert switch.serving == ["us-west-2"]
    assert switch.targets == {EAST: "us-west-2", WEST: "us-west-2"}
    assert switch.changed_at == pulled
    assert switch.seen_at == pulled + 0.15
    assert switch.reloaded_at == pytest.approx(pulled + 0.18)
    assert "us-east-1.relay.localhost -> us-west-2" in said[-1] and "30 ms" in said[-1]
    assert controller.tick() is None  # seen once, switched once

    controls.set("us-east-1", True, at=clock.now)
    back = controller.tick()
    assert back is not None and back.targets == {EAST: "us-east-1", WEST: "us-west-2"}
    assert [s.serving for s in switches] == [["us-west-2"], REGIONS]


def test_a_reload_that_failed_is_tried_again_at_the_next_poll(parts):
    clock, controls, nginx, switches, said, controller = parts
    nginx.down = True
    controls.set("us-west-2", False, at=clock.now)
    failed = controller.tick()
    assert failed is not None and not failed.ok and failed.reloaded_at is None
    assert "could not reload" in said[-1]
    assert controller.tick() is not None  # tried again, recorded and said once
    assert len([m for m in said if "could not reload" in m]) == 1
    nginx.down = False
    again = controller.tick()
    assert again is not None and again.ok
    assert len(nginx.applied) == 3 and [s.ok for s in switches] == [False, True]
    assert controller.tick() is None


def test_unreadable_controls_leave_the_hostnames_where_they_are_and_are_said_once(parts):
    clock, controls, nginx, _switches, said, controller = parts
    controls.broken = True
    for _ in range(3):
        assert controller.tick() is None
    assert controller.errors == 3
    assert len([m for m in said if "unreadable" in m]) == 1
    controls.broken = False
    controls.set("us-east-1", False, at=clock.now)
    assert controller.tick() is not None
    assert "readable again" in said[-2]
    assert nginx.applied[-1]["us-east-1"] == "us-west-2"


def test_no_region_serving_sends_every_hostname_home(parts):
    clock, controls, nginx, _switches, _said, controller = parts
    # the safety rule forbids it; a hand-edited table does not
    controls.set("us-east-1", False, at=clock.now)
    controller.tick()
    controls.set("us-west-2", False, at=clock.now)
    switch = controller.tick()
    assert switch is not None and switch.serving == []
    assert nginx.applied[-1] == {"us-east-1": "us-east-1", "us-west-2": "us-west-2"}


def test_nginx_front_door_writes_each_generation_and_records_the_switches(tmp_path):
    door = NginxFrontDoor(
        tmp_path / "frontdoor",
        free_port(),
        {"us-east-1": free_port(), "us-west-2": free_port()},
        status_port=free_port(),
        master_pid=lambda: None,  # nginx not running: the file is what a restart reads
    )
    door.write(frontdoor.answering(REGIONS, REGIONS))
    assert door.generation == 1
    assert door({"us-east-1": "us-west-2", "us-west-2": "us-west-2"}) is None
    assert door.generation == 2
    conf = door.conf.read_text()
    assert "generation 2: us-east-1.relay.localhost -> us-west-2" in conf
    door.record(Switch(["us-west-2"], {EAST: "us-west-2", WEST: "us-west-2"}, 1.0, 2.0, 2.1))
    view = frontdoor.read_state(tmp_path)
    assert view is not None
    assert view["generation"] == 2
    assert view["targets"] == {EAST: "us-west-2", WEST: "us-west-2"}
    assert view["default_hostname"] == EAST
    assert view["switches"] == [
        {
            "serving": ["us-west-2"],
            "targets": {EAST: "us-west-2", WEST: "us-west-2"},
            "changed_at": 1.0,
            "seen_at": 2.0,
            "reloaded_at": 2.1,
            "ok": True,
        }
    ]


def _routing_table(region: str) -> Any:
    dynamodb = boto3.resource("dynamodb", region_name=region)
    return dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[
            {"AttributeName": "kind", "AttributeType": "S"},
            {"AttributeName": "name", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "kind", "KeyType": "HASH"},
            {"AttributeName": "name", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def test_the_controls_are_read_from_the_next_region_when_the_primary_does_not_answer(aws):
    _routing_table("us-west-2")  # the primary's replica is gone
    west = RoutingControls(TABLE, dynamodb=boto3.resource("dynamodb", region_name="us-west-2"))
    west.evacuate("us-east-1", regions=REGIONS, who="tester", why="game day")
    read = RoutingReader(TABLE, REGIONS, endpoint_url=None)
    controls = read()
    assert not controls["us-east-1"].serving and controls["us-east-1"].reason == "game day"


def test_a_lagging_replica_never_moves_a_control_back(aws):
    """Both replicas exist; the primary's moved on (restored), then stops answering, and
    the next replica still holds the evacuation: the restore stands."""
    east_table = _routing_table("us-east-1")
    _routing_table("us-west-2")
    east = RoutingControls(TABLE, dynamodb=boto3.resource("dynamodb", region_name="us-east-1"))
    west = RoutingControls(TABLE, dynamodb=boto3.resource("dynamodb", region_name="us-west-2"))
    for controls in (east, west):  # replicated
        controls.evacuate("us-east-1", regions=REGIONS, who="tester", why="game day")
    east.restore("us-east-1", regions=REGIONS, who="tester", why="over")  # not replicated yet
    read = RoutingReader(TABLE, REGIONS, endpoint_url=None)
    assert read()["us-east-1"].serving
    east_table.delete()  # the primary's replica stops answering
    assert read()["us-east-1"].serving  # west's older evacuation is not taken


def test_with_no_replica_answering_the_read_fails(aws):
    with pytest.raises(Exception, match="ResourceNotFound"):
        RoutingReader(TABLE, REGIONS, endpoint_url=None)()


def test_two_regions_plan_their_processes_names_and_environments(emulator_url, tmp_path):
    stack = LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path,
        seed=False,
        cells=2,
        regions=("us-east-1", "us-west-2"),
    )
    stack.emulator_url = emulator_url
    stack.deploy()
    stack.plan()
    procs = stack.processes
    west_only = {n for n in procs if n.startswith("us-west-2/")}
    assert west_only == {
        "us-west-2/gateway",
        "us-west-2/loads/cell-1",
        "us-west-2/loads/cell-2",
        "us-west-2/gatepass",
        "us-west-2/replay",
        "us-west-2/notifications",
    }
    # the primary's keep today's names; navigate, message and the projector run there only
    for name in ("gateway", "loads/cell-1", "loads/cell-2", "gatepass", "navigate", "message"):
        assert name in procs
    for name in ("replay", "notifications", "projector", REPLICATOR_NAME, FRONTDOOR_NAME):
        assert name in procs
    assert not any(
        n.startswith("us-west-2/") and ("navigate" in n or "message" in n) for n in procs
    )

    # every process runs in its region
    for name, proc in procs.items():
        if name == FRONTDOOR_NAME:
            continue
        region = "us-west-2" if name.startswith("us-west-2/") else "us-east-1"
        assert proc.env["AWS_REGION"] == region, name
        assert proc.env["AWS_DEFAULT_REGION"] == region, name
    assert procs["us-west-2/gateway"].log_path.name == "us-west-2-gateway.log"

    # each gateway's peer upstreams are the other region's critical module processes
    def peers(name: str) -> dict[str, dict[str, str]]:
        return json.loads(procs[name].env["RELAY_PEER_UPSTREAMS"])

    assert peers("gateway") == {
        "us-west-2": {
            "loads": f"cell-1={procs['us-west-2/loads/cell-1'].url}/,"
            f"cell-2={procs['us-west-2/loads/cell-2'].url}/",
            "gatepass": f"{procs['us-west-2/gatepass'].url}/",
        }
    }
    assert peers("us-west-2/gateway") == {
        "us-east-1": {
            "loads": f"cell-1={procs['loads/cell-1'].url}/,cell-2={procs['loads/cell-2'].url}/",
            "gatepass": f"{procs['gatepass'].url}/",
        }
    }
    # a worker gets the peers' processes exactly when its template gives it peer regions
    for name in ("replay", "us-west-2/replay", "notifications", "us-west-2/notifications"):
        env = procs[name].env
        assert ("RELAY_PEER_UPSTREAMS" in env) == bool(env.get("RELAY_REGION_PEERS")), name
    west = procs["us-west-2/gateway"].env
    # its own critical modules, and the primary's navigate and message (its stacks publish them)
    assert west["RELAY_UPSTREAM_GATEPASS"] == f"{procs['us-west-2/gatepass'].url}/"
    assert west["RELAY_UPSTREAM_NAVIGATE"] == f"{procs['navigate'].url}/"
    assert west["RELAY_UPSTREAM_MESSAGE"] == f"{procs['message'].url}/"
    assert stack.region_clouds["us-west-2"].function_urls["NavigateFunction"] == (
        f"{procs['navigate'].url}/"
    )
    assert west["RELAY_TRUSTED_PROXIES"] == "127.0.0.1"  # behind the front door
    assert west["RELAY_REGION_PEERS"] == "us-east-1"
    assert procs["gateway"].env["RELAY_REGION_PEERS"] == "us-west-2"

    # the replicator keeps the primary's global tables in step between both regions
    replicator = procs[REPLICATOR_NAME].env
    tables = replicator["RELAY_REPLICATOR_TABLES"].split(",")
    assert tables == stack.global_tables and west["RELAY_ROUTING_TABLE"] in tables
    assert replicator["RELAY_REPLICATOR_REGIONS"] == "us-east-1,us-west-2"
    assert replicator["RELAY_REPLICATOR_STATS_FILE"] == str(tmp_path / "replication.json")
    assert replicator["AWS_ENDPOINT_URL"] == emulator_url

    # the front door: on the gateway port, each hostname at its own region's gateway
    assert procs[FRONTDOOR_NAME].port == stack.gateway_port
    assert stack.gateway_url == procs[FRONTDOOR_NAME].url
    assert stack.region_gateway_url("us-west-2") == procs["us-west-2/gateway"].url
    conf = (tmp_path / "frontdoor" / "nginx.conf").read_text()
    assert f"server_name {WEST};" in conf and f"127.0.0.1:{procs['us-west-2/gateway'].port}" in conf

    # a new version of a primary-only module is published by both regions' stacks; a new
    # one of a critical module reaches the other region's peer upstreams
    stack._publish_url("message", "http://127.0.0.1:1/")
    assert procs["us-west-2/gateway"].env["RELAY_UPSTREAM_MESSAGE"] == "http://127.0.0.1:1/"
    assert procs["gateway"].env["RELAY_UPSTREAM_MESSAGE"] == "http://127.0.0.1:1/"
    ssm = stack._session("us-west-2").client("ssm", endpoint_url=emulator_url)
    path = west["RELAY_SSM_PATH"].rstrip("/") + "/message/url"
    assert ssm.get_parameter(Name=path)["Parameter"]["Value"] == "http://127.0.0.1:1/"
    assert stack.region_clouds["us-west-2"].function_urls["MessageFunction"] == (
        "http://127.0.0.1:1/"
    )
    stack._publish_url("gatepass", "http://127.0.0.1:2/")
    assert peers("us-west-2/gateway")["us-east-1"]["gatepass"] == "http://127.0.0.1:2/"
    assert procs["us-west-2/gateway"].env["RELAY_UPSTREAM_GATEPASS"] == (
        f"{procs['us-west-2/gatepass'].url}/"
    )


def test_one_region_plans_exactly_what_it_always_ran(emulator_url, tmp_path):
    stack = LocalStack(gateway_port=free_port(), state_dir=tmp_path, seed=False, cells=1)
    stack.emulator_url = emulator_url
    stack.deploy()
    stack.plan()
    assert set(stack.processes) == {
        "gateway",
        "loads",
        "gatepass",
        "navigate",
        "message",
        "replay",
        "notifications",
        "projector",
    }
    gateway = stack.processes["gateway"]
    assert gateway.port == stack.gateway_port
    assert "RELAY_PEER_UPSTREAMS" not in gateway.env
    assert "RELAY_TRUSTED_PROXIES" not in gateway.env
    assert all(p.env["AWS_REGION"] == "us-east-1" for p in stack.processes.values())
    assert stack.global_tables == []  # one replica each: nothing to replicate
