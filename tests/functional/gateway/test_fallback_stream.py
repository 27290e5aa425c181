"""Module writes -> the table's stream -> the projector -> the fallback store -> a cold
gateway's fallback, with the module down. moto *server* (in a thread, on 127.0.0.1): its
DynamoDB Streams API is what the local stream runner reads (in-process moto does not serve
it), and every stack of a stage is deployed into it as the local stack does."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import httpx
import pytest

from gateway.app import build_fallbacks, create_app
from gateway.fallbackstore.projector import Projector, make_handler
from gateway.fallbackstore.store import FallbackStore
from gateway.routing.routes import RouteTable
from relay import demo
from relay.cloud import LocalCloud, StackResult
from relay.eventsource import DynamoDBStreamRunner
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.gatepass import GatePassCreate, GatePassVerdict
from shared_contracts.identity import Role
from shared_contracts.loads import LoadEventCreate, LoadEventKind, LoadList
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY
from tests.fakes import MonotonicClock, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


@dataclass
class Stage:
    cloud: LocalCloud
    stack: StackResult
    endpoint: str

    def env(self, function: str) -> dict[str, str]:
        return self.cloud.function_env(self.stack, function)

    def fields(self, function: str) -> dict[str, str]:
        return {k.lower(): v for k, v in self.env(function).items()}

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint)

    @property
    def store_table(self) -> str:
        return self.stack.resources["FallbackStoreTable"].ref


@pytest.fixture
def stage(emulator_url: str) -> Stage:
    cloud = LocalCloud(endpoint_url=emulator_url)
    stack = cloud.deploy_system(
        parameters={"Stage": "local", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
    )
    return Stage(cloud, stack, emulator_url)


def drain(stage: Stage, stream_arn: str, store: FallbackStore) -> int:
    """Run the local stream runner with the projector until the stream is read."""
    runner = DynamoDBStreamRunner(
        stream_arn,
        make_handler(Projector(store)),
        streams=stage.client("dynamodbstreams"),
        dynamodb=stage.client("dynamodb"),
    )
    handled = 0
    while True:
        ok, failed = runner.run_once()
        assert failed == 0
        if not ok:
            return handled
        handled += ok


def cold_gateway(settings, stage: Stage, wall: WallClock) -> httpx.AsyncClient:
    s = settings.model_copy(update={"fallback_store_table": stage.store_table})
    app = create_app(
        s,
        routes=RouteTable.load(s.routes_file, env=UPSTREAMS),
        clock=MonotonicClock(),
        wall_clock=wall,
        fallbacks=build_fallbacks(s, wall_clock=wall),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


def auth(role: Role = Role.DRIVER, driver: str | None = "D-1001") -> dict[str, str]:
    return {"authorization": "Bearer " + ISSUER.mint(driver or "gate-1", role, driver)}


async def test_a_load_written_by_its_module_reaches_a_cold_gateway_through_the_stream(
    stage, settings, upstream
):
    from modules.loads.config import LoadsSettings
    from modules.loads.repository import LoadsRepository
    from modules.loads.service import LoadsService

    # GIVEN a load assigned and then an arrival (a TransactWriteItems) through loads' code
    now = datetime.now(UTC)
    loads = LoadsService(
        LoadsRepository(LoadsSettings.model_validate(stage.fields("LoadsFunction")))
    )
    loads.assign(demo.assignment("L-8001", "D-1001", ["F-CHI", "F-IND"], now))
    loads.record_event("D-1001", "L-8001", LoadEventCreate(kind=LoadEventKind.ARRIVED, stop_seq=1))
    # ... projected from the table's stream, as the projector's event source does
    wall = WallClock()
    store = FallbackStore(stage.store_table, clock=lambda: wall.now - 42)
    stream = stage.stack.children["LoadsApp"].resources["LoadsTable"].attrs["StreamArn"]
    assert drain(stage, stream, store) == 2  # moto emits both writes, the transaction's too

    # WHEN a gateway that never served this driver gets their poll, with loads down
    upstream.route(host="loads.test").mock(side_effect=httpx.ConnectError("down"))
    async with cold_gateway(settings, stage, wall) as gateway:
        listing = await gateway.get("/loads", headers=auth())
        detail = await gateway.get("/loads/L-8001", headers=auth())

    # THEN it answers the load as the module last wrote it, marked, with the copy's age
    assert listing.status_code == 200
    (load,) = LoadList.model_validate(listing.json()).items
    assert (load.load_id, load.version, load.stops[0].arrived_at is not None) == (
        "L-8001",
        2,
        True,
    )
    marker = DegradedMarker.parse(listing.headers["relay-degraded"])
    assert marker == DegradedMarker(module="loads", fallback=FallbackKind.LAST_KNOWN_GOOD, age=42)
    assert detail.status_code == 200 and detail.json()["version"] == 2


async def test_keys_and_a_revocation_reach_a_cold_gateway_through_the_stream(
    stage, settings, upstream
):
    from modules.gatepass.config import GatepassSettings
    from modules.gatepass.repository import GatepassRepository
    from modules.gatepass.service import GatepassService
    from modules.gatepass.signing import KmsSigner
    from modules.loads.config import LoadsSettings
    from modules.loads.repository import LoadsRepository
    from modules.loads.service import LoadsService

    now = datetime.now(UTC)
    LoadsService(
        LoadsRepository(LoadsSettings.model_validate(stage.fields("LoadsFunction")))
    ).assign(demo.assignment("L-8002", "D-1001", ["F-CHI", "F-IND"], now))
    config = GatepassSettings.model_validate(stage.fields("GatepassFunction"))
    gatepass = GatepassService(
        GatepassRepository(config), KmsSigner(config.gatepass_signing_key_id)
    )
    # GIVEN a pass issued (which publishes the keys) and then revoked, through gatepass' code
    issued = gatepass.issue("D-1001", GatePassCreate(load_id="L-8002", facility_id="F-CHI"))
    gatepass.revoke(issued.pass_id)
    wall = WallClock()
    wall.now = now.timestamp()  # the pass's own time: valid now, but for its revocation
    store = FallbackStore(stage.store_table, clock=lambda: wall.now)
    stream = stage.stack.children["GatepassApp"].resources["GatePassTable"].attrs["StreamArn"]
    assert drain(stage, stream, store) == 3  # the pass, the keys, the revocation

    # WHEN gates ask a gateway that never saw the keys nor the revocation, gatepass down
    upstream.route(host="gatepass.test").mock(side_effect=httpx.ConnectError("down"))
    async with cold_gateway(settings, stage, wall) as gateway:
        keys = await gateway.get("/gatepass/keys")
        verdict = await gateway.post(
            "/gatepass/verify",
            json={"token": issued.token, "facility_id": "F-CHI"},
            headers=auth(Role.GATE, None),
        )
        passes = await gateway.get("/gatepass", headers=auth())

    # THEN the keys come from the store, and the pass is refused as revoked
    assert keys.status_code == 200 and keys.json()["keys"][0]["kid"] == issued.kid
    assert "relay-degraded" in keys.headers
    judged = GatePassVerdict.model_validate(verdict.json())
    assert (judged.valid, judged.reason) == (False, "revoked")
    assert passes.status_code == 200 and passes.json()["items"] == []
    assert os.environ["AWS_ENDPOINT_URL"] == stage.endpoint  # 127.0.0.1 only
