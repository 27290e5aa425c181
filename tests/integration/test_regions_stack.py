"""The two-region local stack end to end (``relay dev --regions us-east-1,us-west-2``): the
front door answers each region's hostname from its own gateway, a write in us-east-1
reaches us-west-2's replica through the replicator, and ``relay region`` moves us-east-1's
hostname to us-west-2 and back, refusing to evacuate the last serving region.

One stack for the file (cells=1, one gateway per region); the tests run in order, each
leaving the routing controls as it found them. Real processes: every wait polls with a
deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import boto3
import httpx
import pytest

from relay import demo
from relay.devissuer import DevIssuer
from relay.frontdoor import hostname, read_state
from relay.stack import FRONTDOOR_NAME, REPLICATOR_NAME, LocalStack, free_port
from shared_contracts.identity import Role
from tests.integration.conftest import run_relay, wait_until

EAST, WEST = "us-east-1", "us-west-2"
DRIVER = "D-1001"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay-regions"),
        event_source_backoff=(1, 2),
        regions=(EAST, WEST),
        cells=1,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def tokens(stack: LocalStack) -> DevIssuer:
    return DevIssuer.load_or_create(stack.state_dir)


def auth(tokens: DevIssuer, role: Role = Role.DRIVER) -> dict[str, str]:
    if role is Role.DRIVER:
        return {"authorization": "Bearer " + tokens.mint(DRIVER, role, DRIVER)}
    return {"authorization": "Bearer " + tokens.mint(f"{role.value}-it", role, None)}


def via_front_door(stack: LocalStack, tokens: DevIssuer, host: str | None) -> httpx.Response:
    headers = auth(tokens) | ({"host": host} if host else {})
    return httpx.get(f"{stack.gateway_url}/loads", headers=headers, timeout=10)


def answered_by(stack: LocalStack, tokens: DevIssuer, host: str | None) -> str | None:
    answer = via_front_door(stack, tokens, host)
    assert answer.status_code == 200, answer.text
    return answer.headers.get("relay-region")


def test_each_hostname_is_answered_by_its_own_region(stack, tokens):
    assert {n for n in stack.processes if n.startswith(f"{WEST}/")} == {
        f"{WEST}/gateway",
        f"{WEST}/loads",
        f"{WEST}/gatepass",
        f"{WEST}/replay",
        f"{WEST}/notifications",
    }
    assert REPLICATOR_NAME in stack.processes and FRONTDOOR_NAME in stack.processes
    assert answered_by(stack, tokens, hostname(EAST)) == EAST
    assert answered_by(stack, tokens, hostname(WEST)) == WEST
    assert answered_by(stack, tokens, None) == EAST  # any other Host: the primary's
    # the seed reached us-west-2's replica: its gateway has the driver's loads too
    east = via_front_door(stack, tokens, hostname(EAST)).json()
    assert wait_until(lambda: via_front_door(stack, tokens, hostname(WEST)).json() == east, 15)


def test_a_write_in_us_east_1_reaches_us_west_2(stack, tokens):
    load_id = f"L-R{free_port()}"
    command = demo.assignment(
        load_id, DRIVER, ["F-CHI", "F-IND"], datetime.now(UTC), timedelta(hours=1)
    )
    written = httpx.post(
        f"{stack.region_gateway_url(EAST)}/dispatch/assignments",
        json=command.model_dump(mode="json"),
        headers=auth(tokens, Role.DISPATCH),
        timeout=10,
    )
    assert written.status_code == 201, written.text
    table = stack.processes[f"{WEST}/loads"].env["LOADS_TABLE"]
    west = boto3.resource(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name=WEST,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ).Table(table)
    assert wait_until(lambda: "Item" in west.get_item(Key={"load_id": load_id}), 15)
    read = httpx.get(
        f"{stack.region_gateway_url(WEST)}/loads/{load_id}", headers=auth(tokens), timeout=10
    )
    assert read.status_code == 200 and read.headers.get("relay-region") == WEST
    stats = json.loads(stack.replication_stats_file.read_text())
    assert stats["applied"] > 0 and stats["errors"] == 0


def test_evacuating_us_east_1_moves_its_hostname_and_restoring_brings_it_back(stack, tokens):
    began = time.time()
    done = run_relay(stack, "region", "evacuate", EAST, "--reason", "game day", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"front door: {hostname(EAST)} -> {WEST}" in done.stdout
    assert answered_by(stack, tokens, hostname(EAST)) == WEST
    assert answered_by(stack, tokens, None) == WEST
    assert answered_by(stack, tokens, hostname(WEST)) == WEST
    view = read_state(stack.state_dir)
    assert view is not None and view["targets"][hostname(EAST)] == WEST
    switch = view["switches"][-1]
    assert switch["ok"] and switch["serving"] == [WEST]
    assert began <= switch["changed_at"] <= switch["seen_at"] <= switch["reloaded_at"]

    shown = run_relay(stack, "region", "show", timeout=60)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.strip().startswith(EAST))
    assert "EVACUATED" in row and "game day" in row
    assert f"{hostname(EAST):<30} -> {WEST}" in shown.stdout

    # the safety rule: us-west-2 is the last region serving
    refused = run_relay(stack, "region", "evacuate", WEST, "--reason", "drill", timeout=60)
    assert refused.returncode == 2
    assert "would leave no region serving" in refused.stderr
    assert answered_by(stack, tokens, hostname(WEST)) == WEST

    back = run_relay(stack, "region", "restore", EAST, "--reason", "game day over", timeout=60)
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"front door: {hostname(EAST)} -> {EAST}" in back.stdout
    assert answered_by(stack, tokens, hostname(EAST)) == EAST
    assert answered_by(stack, tokens, hostname(WEST)) == WEST
