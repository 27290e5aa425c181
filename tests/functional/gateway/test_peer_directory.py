"""In AWS a peer region's module URLs come from that region's SSM (moto in-process): the
gateway's failover upstreams and the replayer's peer addresses start as placeholders
that answer nothing and take the URLs the peer's stacks published."""

from __future__ import annotations

import boto3
import pytest

from gateway.app import create_app
from gateway.deferred.replayer import peer_addresses
from gateway.routing.routes import RouteTable
from tests.unit.gateway.conftest import UPSTREAMS

CELLED = UPSTREAMS | {"RELAY_UPSTREAM_LOADS": "cell-1=http://a.test,cell-2=http://b.test"}
PUBLISHED = {
    "/relay/test/loads/cell-1/url": "https://loads-1.west.example/",
    "/relay/test/loads/cell-2/url": "https://loads-2.west.example/",
    "/relay/test/gatepass/url": "https://gatepass.west.example/",
}


@pytest.fixture
def peer_ssm(aws):
    west = boto3.client("ssm", region_name="us-west-2")
    for name, value in PUBLISHED.items():
        west.put_parameter(Name=name, Value=value, Type="String")
    boto3.client("ssm", region_name="us-east-1").put_parameter(
        Name="/relay/test/gatepass/url", Value="https://gatepass.east.example/", Type="String"
    )


@pytest.fixture
def peered(settings):
    return settings.model_copy(update={"region_peers": "us-west-2", "ssm_path": "/relay/test"})


def test_the_gateway_reads_each_peer_s_urls_from_that_region(peer_ssm, peered):
    routes = RouteTable.load(peered.routes_file, env=CELLED)
    regions = create_app(peered, routes=routes).state.regions
    (directory,) = regions.directories
    directory.refresh()
    assert {unit: u.base_url for unit, ((_, u),) in regions.failover.items()} == {
        "loads/cell-1": "https://loads-1.west.example",
        "loads/cell-2": "https://loads-2.west.example",
        "gatepass": "https://gatepass.west.example",
    }


def test_the_replayer_reads_them_too(peer_ssm, peered):
    table = RouteTable.load(peered.routes_file, env=CELLED)
    addresses = peer_addresses(peered, table)
    assert {unit: [a.base_url for a in found] for unit, found in addresses.items()} == {
        "loads/cell-1": ["https://loads-1.west.example"],
        "loads/cell-2": ["https://loads-2.west.example"],
        "gatepass": ["https://gatepass.west.example"],
    }


def test_an_unreadable_peer_leaves_placeholders_that_answer_nothing(aws, peered):
    table = RouteTable.load(peered.routes_file, env=UPSTREAMS)
    addresses = peer_addresses(peered, table)  # nothing published there: logged, not raised
    assert all(a.base_url.endswith(".invalid") for found in addresses.values() for a in found)
