"""Game days on the gateway's Lambda handler, every invocation a cold execution environment.

The handler is built as gateway/handler.py builds it (``lambda_handler(create_app())``,
settings from the environment), but afresh for each invocation: no copy in memory, ever.
Its environment is the ``GatewayFunction``'s as the local deployer (relay/cloud.py)
resolves template.yaml into moto server (in a thread, on 127.0.0.1), with what differs
locally as the local stack sets it (the test issuer instead of Cognito, the identity key
in the environment, no SigV4). Loads and gatepass are down: the URLs their stacks publish
are a closed port on 127.0.0.1. Drivers' data reaches the fallback store the real way:
the modules' code writes, the tables' streams, the projector's Lambda entry point.

(b) everything the driver and the gates read answers 200 from the store, marked degraded,
with the stored copy's age (the app's wall clock is injected: the outage's requests come
``COPY_AGE`` seconds after the projection, without sleeping).
(c) the store stalled as well (a proxy in front of moto server stalls every request naming
its table; the deferred queue and ledger, another table, and the control table answer):
every read answers 503 problem+json with Retry-After, no sooner than the store's deadline
and within it plus the module's, and a write posted meanwhile is acknowledged (202) and
kept: pending in the ledger and in the queue, never waiting on the store.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest

from gateway.app import create_app
from gateway.config import DEFAULT_STORE_TIMEOUT_SECONDS, GatewaySettings
from gateway.deferred.ledger import DeferredLedger
from gateway.deferred.queue import DeferredWrite
from gateway.fallbackstore import projector
from gateway.resilience.fallbacks import LastKnownGood
from gateway.routing.routes import RouteTable
from module_kit.lambda_entry import lambda_handler
from relay import demo
from relay.cloud import LocalCloud
from relay.eventsource import DynamoDBStreamRunner
from shared_contracts.degraded import (
    DeferredAccepted,
    DeferredState,
    DegradedMarker,
    FallbackKind,
)
from shared_contracts.gatepass import GatePassCreate, GatePassList, Jwks
from shared_contracts.identity import Role
from shared_contracts.loads import LoadEventCreate, LoadEventKind, LoadList, LoadPublic
from tests.conftest import TEST_IDENTITY_PRIVATE_KEY, TEST_IDENTITY_PUBLIC_KEY
from tests.functional.gateway.test_fallback_stream import Stage as StreamStage
from tests.unit.gateway.conftest import ISSUER

DRIVER = "D-1001"
LOAD = "L-8101"
STAGES = ("prod", "$default")  # an HTTP API's named stage (paths under /prod) and $default
COPY_AGE = 42  # seconds between the projection and the outage's requests (injected clock)
SLACK_SECONDS = 2.0  # a cold instance making its boto3 clients on a busy 2-core host
# moto server runs in this process, sharing its interpreter with the gateway under test on
# a busy host: deadlines that only a stalled dependency misses (template.yaml sets none, so
# a deployed gateway has the defaults, 0.5 s and 1 s). The game day with the store stalled
# reads under the deployed default: a stalled store costs each read its whole deadline.
EMULATOR_DEADLINES = {"RELAY_STORE_TIMEOUT_SECONDS": "5", "RELAY_QUEUE_TIMEOUT_SECONDS": "5"}


@dataclass
class Stage(StreamStage):
    """The stream test's stage, with the URL the down modules are published at."""

    down_url: str


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound but never listening: every connection is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def stage(emulator_url: str, closed_port: int) -> Stage:
    down = f"http://127.0.0.1:{closed_port}/"
    # The modules' stacks publish their function URLs in SSM; the gateway's environment
    # (and its run-time directory) resolve them: loads and gatepass are down there.
    cloud = LocalCloud(
        endpoint_url=emulator_url,
        function_urls={"LoadsFunction": down, "GatepassFunction": down},
    )
    stack = cloud.deploy_system(
        parameters={"Stage": "local", "IdentityPublicKey": TEST_IDENTITY_PUBLIC_KEY}
    )
    return Stage(cloud, stack, emulator_url, down)


@pytest.fixture
def gateway_env(
    stage: Stage, projected: Projected, jwks_file: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The GatewayFunction's environment, set as Lambda sets it (once the projector's is no
    longer needed), with the local differences of relay.stack.local_gateway_env (the test
    issuer's tokens)."""
    env = stage.env("GatewayFunction") | {
        "RELAY_SIGN_UPSTREAMS": "false",
        "RELAY_TOKEN_ISSUER": ISSUER.issuer,
        "RELAY_TOKEN_CLIENT_IDS": ISSUER.client_id,
        "RELAY_JWKS_URL": jwks_file,
        "RELAY_IDENTITY_SIGNING_KEY": TEST_IDENTITY_PRIVATE_KEY,
        "RELAY_IDENTITY_SIGNING_KEY_SECRET_ARN": "",
        **EMULATOR_DEADLINES,
    }
    assert not {"RELAY_STORE_TIMEOUT_SECONDS", "RELAY_QUEUE_TIMEOUT_SECONDS"} & set(
        stage.env("GatewayFunction")
    )
    assert env["RELAY_UPSTREAM_LOADS"] == env["RELAY_UPSTREAM_GATEPASS"] == stage.down_url
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@dataclass
class Projected:
    pass_id: str
    kid: str
    projected_at: dict[str, float]  # store sort key -> when the projector wrote it


@pytest.fixture
def projected(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> Projected:
    """A load assigned and arrived at its first stop, a pass issued (which publishes the
    keys), through the modules' code; then every stream of the projector's function read
    into its Lambda entry point, as its event source mapping does."""
    from modules.gatepass.config import GatepassSettings
    from modules.gatepass.repository import GatepassRepository
    from modules.gatepass.service import GatepassService
    from modules.gatepass.signing import KmsSigner
    from modules.loads.config import LoadsSettings
    from modules.loads.repository import LoadsRepository
    from modules.loads.service import LoadsService

    now = datetime.now(UTC)
    loads = LoadsService(
        LoadsRepository(LoadsSettings.model_validate(stage.fields("LoadsFunction")))
    )
    loads.assign(demo.assignment(LOAD, DRIVER, ["F-CHI", "F-IND"], now))
    loads.record_event(DRIVER, LOAD, LoadEventCreate(kind=LoadEventKind.ARRIVED, stop_seq=1))
    config = GatepassSettings.model_validate(stage.fields("GatepassFunction"))
    gatepass = GatepassService(
        GatepassRepository(config), KmsSigner(config.gatepass_signing_key_id)
    )
    issued = gatepass.issue(DRIVER, GatePassCreate(load_id=LOAD, facility_id="F-CHI"))

    for key, value in stage.env("FallbackProjectorFunction").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(projector, "_handler", None)  # a fresh projector environment too
    handled = 0
    for arn in stage.cloud.stream_event_sources(stage.stack, "FallbackProjectorFunction"):
        runner = DynamoDBStreamRunner(
            arn,
            projector.handler,
            streams=stage.client("dynamodbstreams"),
            dynamodb=stage.client("dynamodb"),
        )
        while (batch := runner.run_once()) != (0, 0):
            assert batch[1] == 0
            handled += batch[0]
    assert handled == 4  # the load's two writes, the pass, the keys

    items = stage.client("dynamodb").scan(TableName=stage.store_table)["Items"]
    when = {i["sk"]["S"]: float(Decimal(i["projected_at"]["N"])) for i in items}
    assert set(when) == {f"load#{LOAD}", f"pass#{issued.pass_id}", "jwks"}
    return Projected(issued.pass_id, issued.kid, when)


# --- invoking the handler ---------------------------------------------------------------


@dataclass
class LambdaContext:
    function_name: str = "relay-local-gateway"
    function_version: str = "7"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return 15_000  # template.yaml's Timeout


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def marker(self) -> DegradedMarker:
        return DegradedMarker.parse(self.headers["relay-degraded"])


def http_api_event(
    method: str,
    path: str,
    stage: str,
    *,
    role: Role | None = Role.DRIVER,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, on ``stage``."""
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    hdrs = {"host": "api.relay.test", "accept": "application/json", "user-agent": "relay-app"}
    if role is not None:
        sub = DRIVER if role is Role.DRIVER else f"{role.value}-1"
        token = ISSUER.mint(sub, role, DRIVER if role is Role.DRIVER else None)
        hdrs["authorization"] = f"Bearer {token}"
    if body is not None:
        hdrs["content-type"] = "application/json"
    hdrs.update(headers or {})
    request_id = str(uuid.uuid4())
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": hdrs,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "relayapi",
            "domainName": "api.relay.test",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "relay-app",
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": stage,
            "time": datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


class ColdGateway:
    """Each invocation on a new app: a cold execution environment every time."""

    def __init__(self, wall_clock: float) -> None:
        self.wall_clock = wall_clock
        self.apps: list[Any] = []

    def invoke(self, event: dict[str, Any]) -> Answer:
        app = create_app(wall_clock=lambda: self.wall_clock)  # settings: the environment
        assert isinstance(app.state.settings, GatewaySettings)
        self.apps.append(app)
        handler = lambda_handler(app)
        started = time.monotonic()
        response = handler(event, LambdaContext())
        seconds = time.monotonic() - started
        # A fresh app per invocation: no live answer ever reached this instance's memory.
        fallbacks = app.state.forwarder.fallbacks.values()
        assert all(len(f) == 0 for f in fallbacks if isinstance(f, LastKnownGood))
        return Answer(
            response["statusCode"],
            {k.lower(): v for k, v in response["headers"].items()},
            response["body"],
            seconds,
        )

    def get(self, path: str, stage: str, role: Role | None = Role.DRIVER) -> Answer:
        return self.invoke(http_api_event("GET", path, stage, role=role))


READS = ("/loads", f"/loads/{LOAD}", "/gatepass", "/gatepass/keys")


def read(gateway: ColdGateway, path: str, stage: str) -> Answer:
    return gateway.get(path, stage, role=None if path == "/gatepass/keys" else Role.DRIVER)


def module_deadline(module: str) -> float:
    return RouteTable.load(GatewaySettings().routes_file).modules[module].timeout_seconds


# --- (b) loads and gatepass down, every instance cold -----------------------------------


def test_cold_lambda_instances_answer_drivers_and_gates_from_the_store_with_modules_down(
    stage, gateway_env, projected
):
    # GIVEN the outage's requests COPY_AGE seconds after the projector's last write
    now = max(projected.projected_at.values()) + COPY_AGE
    gateway = ColdGateway(now)

    def age_of(sk: str) -> int:
        return int(now - projected.projected_at[sk])

    for stage_name in STAGES:
        # WHEN a driver polls their loads and opens one, each request a new instance
        listing = gateway.get("/loads", stage_name)
        detail = gateway.get(f"/loads/{LOAD}", stage_name)
        passes = gateway.get("/gatepass", stage_name)
        keys = gateway.get("/gatepass/keys", stage_name, role=None)

        # THEN each is the module's last write, from the store, marked, with its copy's age
        load_age = age_of(f"load#{LOAD}")
        assert listing.status == 200, listing.body
        assert listing.marker == DegradedMarker(
            module="loads", fallback=FallbackKind.LAST_KNOWN_GOOD, age=load_age
        )
        assert listing.headers["age"] == str(load_age)
        (load,) = LoadList.model_validate_json(listing.body).items
        assert (load.load_id, load.driver_id, load.version) == (LOAD, DRIVER, 2)
        assert load.stops[0].arrived_at is not None  # the arrival, a TransactWriteItems

        assert detail.status == 200, detail.body
        assert detail.marker == DegradedMarker(
            module="loads", fallback=FallbackKind.LAST_KNOWN_GOOD, age=load_age
        )
        assert LoadPublic.model_validate_json(detail.body) == load

        pass_age = age_of(f"pass#{projected.pass_id}")
        assert passes.status == 200, passes.body
        assert passes.marker == DegradedMarker(
            module="gatepass", fallback=FallbackKind.LAST_KNOWN_GOOD, age=pass_age
        )
        assert passes.headers["age"] == str(pass_age)
        (gate_pass,) = GatePassList.model_validate_json(passes.body).items
        assert (gate_pass.pass_id, gate_pass.load_id, gate_pass.revoked) == (
            projected.pass_id,
            LOAD,
            False,
        )

        keys_age = age_of("jwks")
        assert keys.status == 200, keys.body
        assert keys.marker == DegradedMarker(
            module="gatepass", fallback=FallbackKind.LAST_KNOWN_GOOD, age=keys_age
        )
        assert keys.headers["age"] == str(keys_age)
        assert projected.kid in {k.kid for k in Jwks.model_validate_json(keys.body).keys}

    # AND every answer came from an instance that had served no one before
    assert len(gateway.apps) == 4 * len(STAGES) == len({id(a) for a in gateway.apps})


# --- (c) the store stalled as well -------------------------------------------------------


TRICKLE_SECONDS = 0.2  # below the store client's read timeout (module_kit.aws: 1 s)


class StallingProxy:
    """127.0.0.1 in front of moto server: forwards every request, except that while
    ``stalled_table`` is set a DynamoDB request naming it is stalled until the test ends (a
    stalled store; the other tables, SQS and SSM answer). A stalled answer trickles a header
    line now and then and never ends, so no socket timeout of the store's client ever fires:
    only the gateway's own deadline ends the wait."""

    def __init__(self, upstream: str) -> None:
        target = httpx.URL(upstream)
        self.stalled_table: str | None = None
        self.held = 0
        self.release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                table = proxy.stalled_table
                target_header = self.headers.get("x-amz-target") or ""
                if table and target_header.startswith("DynamoDB_") and table.encode() in body:
                    proxy.held += 1
                    self.close_connection = True
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        while not proxy.release.wait(TRICKLE_SECONDS):
                            self.wfile.write(b"x-stalled: 1\r\n")
                            self.wfile.flush()
                    except OSError:  # the client gave up
                        pass
                    return
                conn = http.client.HTTPConnection(target.host, target.port, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    content = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(stage: Stage, monkeypatch: pytest.MonkeyPatch) -> Iterator[StallingProxy]:
    p = StallingProxy(stage.endpoint)
    try:
        yield p
    finally:
        p.close()


def test_with_the_store_stalled_too_reads_get_a_bounded_503_and_a_write_is_kept(
    stage, gateway_env, projected, proxy, monkeypatch
):
    # GIVEN the gateway reaching AWS through the proxy, the store answering there at first
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    gateway = ColdGateway(max(projected.projected_at.values()) + COPY_AGE)
    assert gateway.get("/loads", "prod").status == 200  # the store holds the driver's loads

    # WHEN the store stalls (every request naming its table never answered), read under
    # the deployed deadlines
    proxy.stalled_table = stage.store_table
    monkeypatch.delenv("RELAY_STORE_TIMEOUT_SECONDS")
    settings = GatewaySettings()
    assert settings.store_timeout_seconds == DEFAULT_STORE_TIMEOUT_SECONDS
    for path, stage_name in zip(READS, STAGES * 2, strict=True):
        module = path.split("/")[1]
        answer = read(gateway, path, stage_name)
        # THEN each read is a 503 problem with Retry-After, within both deadlines
        assert answer.status == 503, (path, answer.status, answer.body)
        assert answer.headers["content-type"] == "application/problem+json"
        assert int(answer.headers["retry-after"]) > 0
        assert answer.json()["status"] == 503
        assert "relay-degraded" not in answer.headers
        bound = settings.store_timeout_seconds + module_deadline(module) + SLACK_SECONDS
        assert answer.seconds < bound, (path, answer.seconds)
        # ... and no sooner than the store's deadline: it was the store's stall, not a miss
        assert answer.seconds >= settings.store_timeout_seconds, (path, answer.seconds)
    assert proxy.held >= len(READS)

    # AND a driver's departure posted meanwhile: the deferred queue and ledger are other
    # resources than the store, and answer; the write is deferred, never sent live
    held = proxy.held
    monkeypatch.setenv(
        "RELAY_STORE_TIMEOUT_SECONDS", EMULATOR_DEADLINES["RELAY_STORE_TIMEOUT_SECONDS"]
    )
    key = "game-day-departure-1"
    posted = gateway.invoke(
        http_api_event(
            "POST",
            f"/loads/{LOAD}/events",
            "prod",
            body={"kind": "departed", "stop_seq": 1},
            headers={"idempotency-key": key},
        )
    )
    assert posted.status == 202, posted.body
    assert posted.marker == DegradedMarker(module="loads", fallback=FallbackKind.DEFERRED)
    accepted = DeferredAccepted.model_validate_json(posted.body)
    assert (accepted.tracking_id, accepted.status_url) == (key, f"/deferred/{key}")
    assert proxy.held == held  # a write never waits on the store

    # THEN what was acknowledged is kept: pending in the ledger, in the queue...
    ledger = DeferredLedger(gateway_env["RELAY_DEFERRED_LEDGER_TABLE"])
    status = ledger.status(DRIVER, key)
    assert status is not None and status.state is DeferredState.PENDING
    assert ledger.has_pending(DRIVER, "loads")
    messages = boto3.client("sqs").receive_message(
        QueueUrl=gateway_env["RELAY_DEFERRED_QUEUE_URL"], MaxNumberOfMessages=10
    )["Messages"]
    (write,) = [DeferredWrite.model_validate_json(m["Body"]) for m in messages]
    assert (write.tracking_id, write.caller, write.path) == (key, DRIVER, f"/loads/{LOAD}/events")
    assert json.loads(write.body) == {"kind": "departed", "stop_seq": 1}
    # ... and the driver sees it pending at its status URL, from yet another instance
    tracked = gateway.get(accepted.status_url, "$default")
    assert tracked.status == 200 and tracked.json()["state"] == "pending"
