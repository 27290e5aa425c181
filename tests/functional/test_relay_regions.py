"""``relay region show|evacuate|restore`` (relay/regions.py) against moto's server in this
process: the routing-control table made in both regions as template.yaml's (``kind``,
``name``), a stack.json naming it as the running stack's does. The ARC path runs on fake
clients. No sleeps: the front door wait runs on a fake clock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

from gateway.regions.control import RegionControl, RoutingControls, SafetyRuleError
from relay import stack as stack_module
from relay.cli import app
from relay.regions import (
    ArcControls,
    Lever,
    RegionsError,
    arc_controls,
    change,
    first_replica,
    wait_for_frontdoor,
)

REGIONS = ["us-east-1", "us-west-2"]
TABLE = "relay-local-routing"


def _resource(url: str, region: str) -> Any:
    return boto3.resource(
        "dynamodb",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def _make_table(url: str, region: str) -> None:
    _resource(url, region).create_table(
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


@pytest.fixture
def local(emulator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A running two-region local stack as `relay region` finds it: its stack.json."""
    for region in REGIONS:
        _make_table(emulator_url, region)
    (tmp_path / "stack.json").write_text(
        json.dumps(
            {
                "emulator_url": emulator_url,
                "regions": REGIONS,
                "routing_table": TABLE,
                "frontdoor_state": None,
            }
        )
    )
    monkeypatch.setattr(stack_module, "STATE_DIR", tmp_path)
    monkeypatch.setenv("USER", "tester")
    return emulator_url


def relay(*args: str) -> Any:
    return CliRunner().invoke(app, ["region", *args])


def controls(url: str, region: str = "us-east-1") -> RoutingControls:
    return RoutingControls(TABLE, dynamodb=_resource(url, region))


def test_show_with_no_change_has_every_region_serving(local):
    result = relay("show")
    assert result.exit_code == 0, result.output
    assert "read from us-east-1's replica" in result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["us-east-1", "serving", "0"] in [line[:3] for line in lines]
    assert ["us-west-2", "serving", "0"] in [line[:3] for line in lines]
    assert "last changes (0, newest first)" in result.output


def test_evacuate_and_restore_are_recorded_with_who_and_why(local):
    result = relay("evacuate", "us-east-1", "--reason", "game day", "--who", "alice")
    assert result.exit_code == 0, result.output
    assert "us-east-1: evacuated (revision 1, written to us-east-1's replica)" in result.output
    stored = controls(local).load()["us-east-1"]
    assert (stored.serving, stored.updated_by, stored.reason) == (False, "alice", "game day")

    shown = relay("show").output
    row = next(line for line in shown.splitlines() if line.strip().startswith("us-east-1"))
    assert "EVACUATED" in row and "alice / game day" in row

    restored = relay("restore", "us-east-1", "--reason", "game day over")
    assert restored.exit_code == 0, restored.output
    assert controls(local).load()["us-east-1"].serving
    assert controls(local).load()["us-east-1"].updated_by == "tester"  # the OS user
    audit = controls(local).audit()
    assert [(a.action, a.region, a.who, a.why) for a in audit] == [
        ("restore", "us-east-1", "tester", "game day over"),
        ("evacuate", "us-east-1", "alice", "game day"),
    ]
    shown = relay("show", "--audit", "1").output
    assert "last changes (1, newest first)" in shown and "restore  us-east-1" in shown


def test_the_safety_rule_refuses_to_evacuate_the_last_serving_region(local):
    assert relay("evacuate", "us-west-2", "--reason", "drill").exit_code == 0
    refused = relay("evacuate", "us-east-1", "--reason", "drill")
    assert refused.exit_code == 2
    assert "refused" in refused.output and "would leave no region serving" in refused.output
    assert "us-east-1" not in controls(local).load()  # nothing written
    assert len(controls(local).audit()) == 1


def test_a_region_of_another_stage_and_a_missing_reason_are_refused(local):
    other = relay("evacuate", "eu-west-1", "--reason", "drill")
    assert other.exit_code == 2 and "not one of this stage's regions" in other.output
    assert relay("evacuate", "us-east-1").exit_code == 2  # --reason is required
    assert relay("evacuate", "us-east-1", "--reason", "  ").exit_code == 2
    assert controls(local).load() == {}


def test_the_lever_works_through_the_next_region_when_the_primary_does_not_answer(local):
    _resource(local, "us-east-1").Table(TABLE).delete()
    result = relay("evacuate", "us-east-1", "--reason", "us-east-1 is failing")
    assert result.exit_code == 0, result.output
    assert "us-east-1's replica did not answer" in result.output
    assert "written to us-west-2's replica" in result.output
    assert not controls(local, "us-west-2").load()["us-east-1"].serving


def test_no_running_stack_is_said(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_module, "STATE_DIR", tmp_path)
    result = relay("show")
    assert result.exit_code == 2 and "not running" in result.output


# --- Route 53 ARC (--target aws), on fake clients -------------------------------------------


class FakeCluster:
    """One ARC cluster endpoint: ``down`` makes it fail, as an unreachable endpoint does."""

    def __init__(self, states: dict[str, str], *, down: bool = False) -> None:
        self.states = states
        self.down = down
        self.calls: list[tuple[str, str]] = []

    def update_routing_control_state(self, RoutingControlArn: str, RoutingControlState: str):
        if self.down:
            raise ConnectionError("endpoint unreachable")
        self.calls.append((RoutingControlArn, RoutingControlState))
        self.states[RoutingControlArn] = RoutingControlState
        return {}

    def get_routing_control_state(self, RoutingControlArn: str):
        if self.down:
            raise ConnectionError("endpoint unreachable")
        return {"RoutingControlState": self.states.get(RoutingControlArn, "Off")}


ARNS = {"us-east-1": "arn:rc/east", "us-west-2": "arn:rc/west"}


def arc(*, first_down: bool = True, all_down: bool = False) -> tuple[ArcControls, dict]:
    states: dict[str, str] = {ARNS["us-east-1"]: "On", ARNS["us-west-2"]: "On"}
    endpoints = {
        "https://a.example": FakeCluster(states, down=first_down or all_down),
        "https://b.example": FakeCluster(states, down=all_down),
    }
    return (
        ArcControls(
            dict(ARNS),
            [("https://a.example", "ap-northeast-1"), ("https://b.example", "us-west-2")],
            lambda endpoint, _region: endpoints[endpoint],
        ),
        states,
    )


def test_an_aws_evacuation_flips_the_arc_control_through_the_first_endpoint_that_answers(
    local,
):
    controls_, states = arc()
    lever = Lever(REGIONS, controls(local), "us-east-1", controls_)
    said: list[str] = []
    changed = change(lever, "us-east-1", evacuate=True, who="alice", why="drill", say=said.append)
    assert not changed.serving
    assert states == {ARNS["us-east-1"]: "Off", ARNS["us-west-2"]: "On"}
    assert "ARC routing control Off (via https://b.example)" in said[-1]
    assert controls_.states() == {"us-east-1": "Off", "us-west-2": "On"}
    change(lever, "us-east-1", evacuate=False, who="alice", why="over", say=said.append)
    assert states[ARNS["us-east-1"]] == "On"


def test_the_safety_rule_refuses_before_arc_is_touched(local):
    controls_, states = arc()
    lever = Lever(REGIONS, controls(local), "us-east-1", controls_)
    change(lever, "us-west-2", evacuate=True, who="a", why="b", say=lambda _m: None)
    with pytest.raises(SafetyRuleError):
        change(lever, "us-east-1", evacuate=True, who="a", why="b", say=lambda _m: None)
    assert states[ARNS["us-east-1"]] == "On"


def test_arc_unreachable_says_what_moved_and_what_did_not(local):
    controls_, _states = arc(all_down=True)
    lever = Lever(REGIONS, controls(local), "us-east-1", controls_)
    with pytest.raises(RegionsError, match=r"(?s)Route 53 ARC.s is not .*run the same command"):
        change(lever, "us-east-1", evacuate=True, who="a", why="b", say=lambda _m: None)
    assert not controls(local).load()["us-east-1"].serving  # the gateways' lever moved
    assert controls_.states() == {}


def test_the_front_door_stack_names_the_regions_controls_and_endpoints():
    class CloudFormation:
        def describe_stacks(self, StackName: str):
            assert StackName == "relay-prod-frontdoor"
            return {
                "Stacks": [
                    {
                        "Parameters": [
                            {"ParameterKey": "PrimaryRegion", "ParameterValue": "us-east-1"},
                            {"ParameterKey": "SecondaryRegion", "ParameterValue": "us-west-2"},
                        ],
                        "Outputs": [
                            {"OutputKey": "ClusterArn", "OutputValue": "arn:cluster"},
                            {"OutputKey": "PrimaryRoutingControlArn", "OutputValue": "arn:rc/e"},
                            {"OutputKey": "SecondaryRoutingControlArn", "OutputValue": "arn:rc/w"},
                        ],
                    }
                ]
            }

    class ControlConfig:
        def describe_cluster(self, ClusterArn: str):
            assert ClusterArn == "arn:cluster"
            return {"Cluster": {"ClusterEndpoints": [{"Endpoint": "https://a", "Region": "eu-1"}]}}

    regions, found = arc_controls(
        "prod",
        cloudformation=CloudFormation(),
        control_config=ControlConfig(),
        client=lambda _endpoint, _region: None,
    )
    assert regions == ["us-east-1", "us-west-2"]
    assert found.controls == {"us-east-1": "arn:rc/e", "us-west-2": "arn:rc/w"}
    assert found.endpoints == [("https://a", "eu-1")]


def test_no_replica_answering_is_an_error_naming_each(local):
    for region in REGIONS:
        _resource(local, region).Table(TABLE).delete()
    with pytest.raises(RegionsError, match="no replica of relay-local-routing answers"):
        first_replica(TABLE, REGIONS, lambda region: _resource(local, region))


# --- waiting for the local front door --------------------------------------------------------


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_front_door_switch_of_a_change_is_found_by_its_time(tmp_path):
    state = tmp_path / "frontdoor.json"
    changed = RegionControl("us-east-1", serving=False, revision=1, updated_at=100.25)
    state.write_text(
        json.dumps(
            {
                "switches": [
                    {"changed_at": 50.0, "seen_at": 50.1, "reloaded_at": 50.2, "ok": True},
                    {"changed_at": 100.25, "seen_at": 100.4, "reloaded_at": 100.5, "ok": True},
                ]
            }
        )
    )
    t = FakeTime()
    switch = wait_for_frontdoor(state, changed, timeout=1.0, clock=t.clock, sleep=t.sleep)
    assert switch is not None and switch["reloaded_at"] == 100.5
    other = RegionControl("us-east-1", serving=True, revision=2, updated_at=200.0)
    assert wait_for_frontdoor(state, other, timeout=1.0, clock=t.clock, sleep=t.sleep) is None
    assert t.now >= 1.0  # waited out the timeout on the fake clock
