"""The fallback store as the critical fallbacks' second layer, and the projector's mapping
of stream records to store items (the store's conditional writes against DynamoDB itself
are tested in tests/functional/gateway/test_fallback_store.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import build_fallbacks, create_app
from gateway.fallbackstore.projector import KEYS_ITEM, Projector, make_handler
from gateway.fallbackstore.store import FallbackStore, StoreUnavailable
from gateway.routing.routes import RouteTable
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.gatepass import GatePassVerdict
from shared_contracts.identity import Role
from shared_contracts.loads import LoadList, LoadPublic
from shared_contracts.navigate import Directions
from tests.fakes import NOW, MonotonicClock, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS
from tests.unit.gateway.test_resilience import a_gate_pass, a_load

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- a DynamoDB table, as much of it as the store's reads use --------------------------


class FakeTable:
    """The table as the store's low-level client serves its reads (``FallbackStore.client``):
    items in DynamoDB's typed form, only the projected attributes. Counts the reads."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.blocked: threading.Event | None = None  # set: every read waits for it
        self.failing = False  # set: every read fails as DynamoDB's client would
        self.reads = 0

    def _read(self) -> None:
        self.reads += 1
        if self.blocked is not None:
            self.blocked.wait(5)
        if self.failing:
            raise ClientError({"Error": {"Code": "InternalServerError"}}, "Query")

    @staticmethod
    def _projected(item: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = kwargs["ExpressionAttributeNames"]
        wanted = {names[n.strip()] for n in kwargs["ProjectionExpression"].split(",")}
        ser = TypeSerializer()
        return {k: ser.serialize(v) for k, v in item.items() if k in wanted}

    def get_item(self, TableName: str, Key: dict[str, dict[str, str]], **kw: Any) -> dict:
        self._read()
        item = self.items.get((Key["pk"]["S"], Key["sk"]["S"]))
        return {"Item": self._projected(item, kw)} if item is not None else {}

    def query(self, TableName: str, KeyConditionExpression: str, **kw: Any) -> dict:
        self._read()
        assert KeyConditionExpression == "#pk = :pk AND begins_with(#sk, :prefix)"
        values = kw["ExpressionAttributeValues"]
        pk, prefix = values[":pk"]["S"], values[":prefix"]["S"]
        found = [i for (p, s), i in sorted(self.items.items()) if p == pk and s.startswith(prefix)]
        return {"Items": [self._projected(i, kw) for i in found]}

    def put(self, pk: str, sk: str, doc: object, projected_at: float, **extra: Any) -> None:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        self.items[(pk, sk)] = {
            "pk": pk,
            "sk": sk,
            "doc": text,
            "projected_at": Decimal(str(projected_at)),
            **extra,
        }


class FakeResource:
    def __init__(self, table: FakeTable) -> None:
        self.table = table

    def Table(self, name: str) -> FakeTable:
        return self.table


class StoreHarness:
    """A gateway whose modules are all down, with the fallback store on ``table``."""

    def __init__(self, settings, table: FakeTable, **settings_kw: Any) -> None:
        self.wall = WallClock()
        s = settings.model_copy(update={"fallback_store_table": "store", **settings_kw})
        fallbacks = build_fallbacks(s, wall_clock=self.wall, dynamodb=FakeResource(table))
        # the store's read cache on an injected clock too
        self.monotonic = MonotonicClock()
        self.store = fallbacks["loads-last-known-good"].store  # type: ignore[attr-defined]
        self.store.monotonic = self.monotonic
        self.store.client = table
        self.app = create_app(
            s,
            routes=RouteTable.load(s.routes_file, env=UPSTREAMS),
            clock=MonotonicClock(),
            wall_clock=self.wall,
            fallbacks=fallbacks,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway"
        )

    def auth(self, role: Role = Role.DRIVER, driver: str | None = "D-1001") -> dict[str, str]:
        return {"authorization": "Bearer " + ISSUER.mint(driver or "gate-1", role, driver)}


@pytest.fixture
def modules_down(upstream):
    for name in ("loads", "gatepass", "navigate"):
        upstream.route(host=f"{name}.test", name=name).mock(side_effect=httpx.ConnectError("down"))
    return upstream


@pytest.fixture
def table() -> FakeTable:
    return FakeTable()


@pytest.fixture
def store_harness(settings, table, modules_down):
    def make(**kw: Any) -> StoreHarness:
        return StoreHarness(settings, table, **kw)

    return make


def marker_of(response: httpx.Response) -> DegradedMarker:
    return DegradedMarker.parse(response.headers["relay-degraded"])


# --- the read path ---------------------------------------------------------------------


async def test_a_driver_who_never_called_gets_their_loads_from_the_store_with_its_age(
    store_harness, table
):
    h = store_harness()
    projected = h.wall.now - 240
    table.put("driver#D-1001", "load#L-2", a_load("L-2"), projected)
    delivered = a_load("L-1", status="delivered", current_stop=2)
    table.put("driver#D-1001", "load#L-1", delivered, projected + 60)
    table.put("driver#D-2", "load#L-9", a_load("L-9"), projected)

    listing = await h.client.get("/loads", headers=h.auth())
    detail = await h.client.get("/loads/L-1", headers=h.auth())

    assert listing.status_code == 200
    # in the module's order: a delivered load last
    assert [x.load_id for x in LoadList.model_validate(listing.json()).items] == ["L-2", "L-1"]
    assert marker_of(listing) == DegradedMarker(
        module="loads", fallback=FallbackKind.LAST_KNOWN_GOOD, age=240
    )  # the oldest part of what is served
    assert listing.headers["age"] == "240"
    assert LoadPublic.model_validate(detail.json()).load_id == "L-1"
    assert marker_of(detail).age == 180
    # another driver's load is not this driver's
    assert (await h.client.get("/loads/L-9", headers=h.auth())).status_code == 503


async def test_this_process_s_copy_comes_first(store_harness, table, modules_down):
    h = store_harness()
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), h.wall.now - 999)
    live = modules_down["loads"].mock(
        return_value=httpx.Response(200, json={"items": [a_load("L-1"), a_load("L-5")]})
    )
    await h.client.get("/loads", headers=h.auth())
    live.mock(side_effect=httpx.ConnectError("down"))
    h.wall.now += 30
    again = await h.client.get("/loads", headers=h.auth())
    assert [x["load_id"] for x in again.json()["items"]] == ["L-1", "L-5"]
    assert marker_of(again).age == 30


async def test_nothing_in_the_store_is_503_with_retry_after(store_harness):
    h = store_harness()
    r = await h.client.get("/loads", headers=h.auth())
    assert r.status_code == 503 and r.headers["retry-after"]


async def test_a_stalled_store_is_503_within_its_deadline_never_500(store_harness, table):
    h = store_harness(store_timeout_seconds=0.05)
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), h.wall.now)
    table.blocked = threading.Event()
    try:
        r = await h.client.get("/loads", headers=h.auth())
    finally:
        table.blocked.set()
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_passes_from_the_store_only_while_valid_and_not_revoked(store_harness, table):
    h = store_harness()
    table.put("driver#D-1001", "pass#P-1", a_gate_pass("P-1"), h.wall.now - 10)
    table.put("driver#D-1001", "pass#P-2", {**a_gate_pass("P-2"), "revoked": True}, h.wall.now)
    gone = a_gate_pass("P-3", valid_for=timedelta(seconds=-1))
    table.put("driver#D-1001", "pass#P-3", gone, h.wall.now)

    listing = await h.client.get("/gatepass", headers=h.auth())
    assert [p["pass_id"] for p in listing.json()["items"]] == ["P-1"]
    assert marker_of(listing).module == "gatepass" and marker_of(listing).age == 10
    assert (await h.client.get("/gatepass/P-1", headers=h.auth())).status_code == 200
    assert (await h.client.get("/gatepass/P-2", headers=h.auth())).status_code == 503
    again = await h.client.post(
        "/gatepass", json={"load_id": "L-1", "facility_id": "F-1"}, headers=h.auth()
    )
    assert again.status_code == 200 and again.json()["pass_id"] == "P-1"


async def test_a_driver_s_loads_are_kept_a_second_and_served_with_their_own_age(
    store_harness, table
):
    h = store_harness()
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), h.wall.now - 240)
    first = await h.client.get("/loads", headers=h.auth())
    assert marker_of(first).age == 240 and table.reads == 1

    # a newer projection lands; within the second the kept copy is served, with the age
    # of that copy (not of the newer one, nor 0)
    table.put("driver#D-1001", "load#L-2", a_load("L-2"), h.wall.now)
    h.wall.advance(30)
    h.monotonic.advance(0.9)
    kept = await h.client.get("/loads", headers=h.auth())
    assert [x["load_id"] for x in kept.json()["items"]] == ["L-1"]
    assert marker_of(kept).age == 270 and kept.headers["age"] == "270"
    assert table.reads == 1

    # a second after the read: the kept copy once more, while a read refreshes it behind
    h.monotonic.advance(0.2)
    stale = await h.client.get("/loads", headers=h.auth())
    assert [x["load_id"] for x in stale.json()["items"]] == ["L-1"]
    assert marker_of(stale).age == 270
    await h.store.settled()
    assert table.reads == 2
    fresh = await h.client.get("/loads", headers=h.auth())
    assert sorted(x["load_id"] for x in fresh.json()["items"]) == ["L-1", "L-2"]
    assert marker_of(fresh).age == 270  # the oldest part of what is served
    assert table.reads == 2

    # nothing asked for two seconds after that read: the request waits for the store
    table.put("driver#D-1001", "load#L-3", a_load("L-3"), h.wall.now)
    h.monotonic.advance(2.0)
    waited = await h.client.get("/loads", headers=h.auth())
    assert sorted(x["load_id"] for x in waited.json()["items"]) == ["L-1", "L-2", "L-3"]
    assert table.reads == 3


async def test_concurrent_reads_of_a_driver_s_loads_share_one_store_call(table):
    store = FallbackStore(
        "store", dynamodb=FakeResource(table), client=table, monotonic=MonotonicClock()
    )
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), NOW.timestamp())
    table.blocked = threading.Event()
    waiting = [asyncio.ensure_future(store.loads("D-1001")) for _ in range(5)]
    other = asyncio.ensure_future(store.loads("D-2"))
    await asyncio.sleep(0)  # every caller is waiting on its read
    table.blocked.set()
    answers = await asyncio.gather(*waiting)
    assert await other == []
    assert table.reads == 2  # one for D-1001's five callers, one for D-2
    assert all([c.doc for c in a] == [table.items[("driver#D-1001", "load#L-1")]["doc"]]
               for a in answers)  # fmt: skip


async def test_a_failed_read_is_not_kept_and_passes_are_read_each_time(table):
    store = FallbackStore(
        "store", dynamodb=FakeResource(table), client=table, monotonic=MonotonicClock()
    )
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), NOW.timestamp())
    table.put("driver#D-1001", "pass#P-1", a_gate_pass("P-1"), NOW.timestamp())
    table.failing = True
    with pytest.raises(StoreUnavailable):
        await store.loads("D-1001")
    with pytest.raises(StoreUnavailable):
        await store.load("D-1001", "L-1")
    table.failing = False
    assert len(await store.loads("D-1001")) == 1  # read again at once, clock unmoved
    assert (await store.load("D-1001", "L-1")) is not None
    assert table.reads == 4
    for _ in range(2):
        assert len(await store.passes("D-1001")) == 1
        assert await store.gate_pass("D-1001", "P-1") is not None
        assert await store.is_revoked("P-1") is False
    assert table.reads == 4 + 6  # a pass's revocation is never held back


async def test_the_store_s_own_writes_empty_what_it_keeps(table):
    clock = MonotonicClock()
    store = FallbackStore("store", dynamodb=FakeResource(table), client=table, monotonic=clock)
    assert await store.loads("D-1001") == []
    table.put_item = lambda **_: None  # type: ignore[attr-defined]  # the projector's write
    store.put_load("D-1001", "L-1", json.dumps(a_load("L-1")), 3, Decimal(1))
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), NOW.timestamp())
    assert [c.projected_at for c in await store.loads("D-1001")] == [NOW.timestamp()]
    assert table.reads == 2


def signing_key() -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return key, {**public, "kid": "k1", "alg": "ES256", "use": "sig"}


def token(key: ec.EllipticCurvePrivateKey, pass_id: str, now: float) -> str:
    claims = {
        "jti": pass_id,
        "sub": "D-1001",
        "load_id": "L-1",
        "facility_id": "F-1",
        "iat": int(now),
        "nbf": int(now) - 60,
        "exp": int(now) + 3600,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1"})


async def test_a_cold_instance_serves_the_keys_and_checks_revocations_from_the_store(
    store_harness, table
):
    h = store_harness()
    key, jwk = signing_key()
    table.put("gatepass", "jwks", {"keys": [jwk]}, h.wall.now - 50)
    table.put("revoked#P-9", "-", "", h.wall.now)

    keys = await h.client.get("/gatepass/keys")
    assert keys.status_code == 200 and keys.json()["keys"][0]["kid"] == "k1"
    assert marker_of(keys) == DegradedMarker(
        module="gatepass", fallback=FallbackKind.LAST_KNOWN_GOOD, age=50
    )
    gate = h.auth(Role.GATE, None)
    for pass_id, valid, reason in (("P-1", True, "valid"), ("P-9", False, "revoked")):
        r = await h.client.post(
            "/gatepass/verify",
            json={"token": token(key, pass_id, h.wall.now), "facility_id": "F-1"},
            headers=gate,
        )
        verdict = GatePassVerdict.model_validate(r.json())
        assert (verdict.valid, verdict.reason) == (valid, reason), pass_id


async def test_static_directions_from_the_store_s_load_and_entry_data(store_harness, table):
    h = store_harness()
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), h.wall.now)
    facility = {
        **a_load()["stops"][0]["facility"],
        "entry_instructions": "North gate, badge at kiosk",
        "dock_hours": {"opens": "06:00", "closes": "22:00", "days": "Mon-Sat"},
    }
    table.put("facility#F-IND", "-", facility, h.wall.now)
    r = await h.client.get("/navigate?load_id=L-1&lat=41.8781&lon=-87.6298", headers=h.auth())
    assert r.status_code == 200
    answer = Directions.model_validate(r.json())
    assert answer.destination.entry_instructions == "North gate, badge at kiosk"
    assert answer.engine == "gateway-static"


# --- the projector: stream records -> store items --------------------------------------


class RecordingStore:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail_on = fail_on

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> bool:
            if self.fail_on is not None and self.fail_on in json.dumps(args, default=str):
                raise RuntimeError("the store failed")
            self.calls.append((name, args, kwargs))
            return True

        return record


def record(
    image: dict[str, Any] | None,
    seq: str,
    *,
    event: str = "MODIFY",
    keys: dict[str, Any] | None = None,
    created: int = 1_780_000_000,
) -> dict[str, Any]:
    ser = TypeSerializer()
    change: dict[str, Any] = {
        "SequenceNumber": seq,
        "ApproximateCreationDateTime": created,
        "StreamViewType": "NEW_IMAGE",
        "Keys": {k: ser.serialize(v) for k, v in (keys or {}).items()},
    }
    if image is not None:
        change["NewImage"] = {k: ser.serialize(v) for k, v in image.items()}
    return {
        "eventID": seq,
        "eventName": event,
        "eventSource": "aws:dynamodb",
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
        "dynamodb": change,
    }


def load_image(load_id: str = "L-1", version: int = 3) -> dict[str, Any]:
    doc = {**a_load(load_id), "version": version}
    return {
        "load_id": load_id,
        "driver_id": "D-1001",
        "status": "assigned",
        "version": version,
        "doc": json.dumps(doc),
        "event_keys": {"k": 1},
    }


def pass_image(pass_id: str, *, revoked: bool = False) -> dict[str, Any]:
    doc = {**a_gate_pass(pass_id), "revoked": revoked}
    return {"pass_id": pass_id, "driver_id": "D-1001", "revoked": revoked, "doc": json.dumps(doc)}


def handle(store: RecordingStore, *records: dict[str, Any]) -> dict[str, Any]:
    return make_handler(Projector(store))({"Records": list(records)}, None)  # type: ignore[arg-type]


def test_a_load_record_becomes_the_driver_s_load_at_its_version():
    store = RecordingStore()
    assert handle(store, record(load_image(version=3), "101")) == {"batchItemFailures": []}
    ((name, args, _),) = store.calls
    assert name == "put_load"
    driver, load_id, doc, version, changed_at = args
    assert (driver, load_id, version, changed_at) == ("D-1001", "L-1", 3, 1_780_000_000)
    assert LoadPublic.model_validate_json(doc).version == 3
    assert "event_keys" not in doc  # the public document only


def test_a_pass_record_is_stored_until_it_expires_and_a_revoked_one_is_also_a_revocation():
    store = RecordingStore()
    handle(store, record(pass_image("P-1"), "7"), record(pass_image("P-2", revoked=True), "8"))
    names = [c[0] for c in store.calls]
    assert names == ["put_pass", "put_revoked", "put_pass"]
    first = store.calls[0][2]
    valid_until = NOW + timedelta(hours=2)
    assert first["revoked"] is False and first["expires_at"] == int(valid_until.timestamp()) + 1
    assert first["seq"] == "7".zfill(40)  # string order is numeric order
    assert store.calls[1][1][0] == "P-2" and store.calls[2][2]["revoked"] is True


def test_rotated_keys_and_facilities_are_projected_and_a_removed_facility_removed():
    store = RecordingStore()
    _, jwk = signing_key()
    keys = {"pass_id": KEYS_ITEM, "doc": json.dumps({"keys": [jwk]}), "published_at": 1234}
    facility = {**a_load()["stops"][0]["facility"], "entry_instructions": "Gate 3"}
    handle(
        store,
        record(keys, "1"),
        record({"facility_id": "F-IND", "cell": "c1", "doc": json.dumps(facility)}, "2"),
        record(None, "3", event="REMOVE", keys={"facility_id": "F-OLD"}),
        record(None, "4", event="REMOVE", keys={"load_id": "L-1"}),  # never deleted
    )
    assert [c[0] for c in store.calls] == ["put_jwks", "put_facility", "delete_facility"]
    assert store.calls[0][1][1] == 1234
    assert store.calls[2][1] == ("F-OLD", "3".zfill(40))


def test_a_record_that_cannot_be_projected_is_a_batch_item_failure_the_rest_go_on():
    store = RecordingStore(fail_on="L-2")
    bad_doc = {**load_image("L-3"), "doc": json.dumps({"load_id": "L-3"})}  # not a LoadPublic
    answer = handle(
        store,
        record(load_image("L-1"), "1"),
        record(load_image("L-2"), "2"),
        record(bad_doc, "3"),
        record({"something": "else"}, "4"),  # another shape: skipped, not failed
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    assert [c[1][1] for c in store.calls] == ["L-1"]


async def test_a_failed_refresh_leaves_the_kept_loads_to_age_out(table):
    clock = MonotonicClock()
    store = FallbackStore("store", dynamodb=FakeResource(table), client=table, monotonic=clock)
    table.put("driver#D-1001", "load#L-1", a_load("L-1"), NOW.timestamp())
    assert len(await store.loads("D-1001")) == 1
    table.failing = True
    clock.advance(1.5)  # stale: served, and a refresh that fails
    assert len(await store.loads("D-1001")) == 1
    await store.settled()
    assert table.reads == 2
    clock.advance(0.6)  # two seconds after the last read that worked: nothing to serve
    with pytest.raises(StoreUnavailable):
        await store.loads("D-1001")
    assert table.reads == 3
