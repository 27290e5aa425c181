"""Region game days (`relay dev --regions us-east-1,us-west-2`): two regions on one
emulator, each with its own gateway, loads and gatepass; the replicator playing DynamoDB
global tables; nginx playing Route 53 in front, each driver on their home region's
hostname.

1. Evacuating us-east-1 under a bounded synthetic load (ten drivers each reporting a
   ten-event trip and reading their loads between events, about 200 requests): no driver
   request fails (the app retries a write with its Idempotency-Key, as it does on any
   network), every acknowledged event is applied exactly once, in order, and is in
   us-west-2's table; the us-east-1 hostname is served by us-west-2's gateway within
   seconds of the command; restoring brings it home.
2. A write retried in the other region is answered as a replay; a gate pass issued in
   us-east-1 is admitted by us-west-2 (one multi-Region signing key).
3. us-east-1's loads tables deleted (its data plane gone): its drivers keep their loads,
   first from the fallback, then live from us-west-2's loads through their own gateway
   (the breaker opened, the gateway failed over).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import boto3
import httpx
import pytest
from boto3.dynamodb.conditions import Key

from relay import demo
from relay.stack import LocalStack, free_port
from shared_contracts.identity import Role
from tests.integration.conftest import Api, run_relay, wait_until

EAST, WEST = "us-east-1", "us-west-2"
REGIONS = (EAST, WEST)
ROUTE = ["F-CHI", "F-IND", "F-CMH", "F-DET", "F-CHI"]
TRIP = [
    e
    for s in range(1, 6)
    for e in ([("arrived", s), ("departed", s)] if s < 5 else [("arrived", s), ("delivered", s)])
]
HOME = {f"D-83{n:02d}": EAST if n < 5 else WEST for n in range(10)}
LOAD_OF = {d: f"L-83{d[-2:]}" for d in HOME}


def host(region: str) -> dict[str, str]:
    """The driver's home region's hostname: in production its Route 53 failover record."""
    return {"host": f"{region}.relay.localhost"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        regions=REGIONS,
    ) as s:
        yield s


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Iterator[Api]:
    client = Api(stack)
    for driver, region in HOME.items():
        body = demo.assignment(LOAD_OF[driver], driver, ROUTE, datetime.now(UTC))
        r = client.http.post(
            "/dispatch/assignments",
            json=body.model_dump(mode="json"),
            headers={**client.auth(Role.DISPATCH), **host(region)},
        )
        assert r.status_code == 201, r.text
        assert r.headers["relay-region"] == region
    yield client
    client.http.close()


def table(stack: LocalStack, region: str, variable: str):
    """One of loads' tables in ``region`` (the same name in both: a global table)."""
    name = stack.processes["loads" if region == EAST else f"{region}/loads"].env[variable]
    return boto3.resource(
        "dynamodb",
        endpoint_url=stack.emulator_url,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ).Table(name)


def events_in(stack: LocalStack, region: str, load_id: str) -> list[tuple[str, int]]:
    items = table(stack, region, "LOAD_EVENTS_TABLE").query(
        KeyConditionExpression=Key("load_id").eq(load_id)
    )["Items"]
    docs = [json.loads(i["doc"]) for i in sorted(items, key=lambda i: i["seq"])]
    return [(d["kind"], d["stop_seq"]) for d in docs]


def regions_view(stack: LocalStack, api: Api, region: str) -> dict:
    with httpx.Client(base_url=stack.region_gateway_url(region), timeout=10) as c:
        r = c.get("/ops/regions", headers=api.auth(Role.OPS))
        assert r.status_code == 200, r.text
        return r.json()


@dataclass
class Answer:
    at: float
    kind: str  # "read" or "write"
    status: int  # 0: no answer (transport error)
    region: str  # the gateway that answered
    detail: str = ""  # a failed answer's problem type


@dataclass
class Driver:
    """An app on its home region's hostname: reads its loads, reports its trip; a write is
    retried with the same Idempotency-Key until acknowledged, a read retried once.

    Right after the shift, the other region may not have the driver's last writes yet
    (replication lag): an event that follows one of them is refused there as out of order
    (409 ``invalid-transition``) until it arrives. The app retries those too, with the
    same key (safe: a write applied is answered as a replay), and each is counted."""

    api: Api
    driver_id: str
    deadline: float
    answers: list[Answer] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    behind: list[float] = field(default_factory=list)  # when a write met unreplicated state

    @property
    def load_id(self) -> str:
        return LOAD_OF[self.driver_id]

    def ask(self, client: httpx.Client, kind: str, method: str, path: str, **kw) -> int:
        try:
            r = client.request(method, path, **kw)
        except httpx.TransportError:
            self.answers.append(Answer(time.monotonic(), kind, 0, ""))
            return 0
        self.answers.append(
            Answer(
                time.monotonic(),
                kind,
                r.status_code,
                r.headers.get("relay-region", ""),
                r.text[:160] if r.status_code >= 300 else "",
            )
        )
        return r.status_code

    def run(self) -> None:
        rng = random.Random(self.driver_id)
        headers = {**self.api.auth(Role.DRIVER, self.driver_id), **host(HOME[self.driver_id])}
        with httpx.Client(base_url=self.api.stack.gateway_url, headers=headers, timeout=10) as c:
            for i, (kind, stop) in enumerate(TRIP):
                if all(self.ask(c, "read", "GET", "/loads") != 200 for _ in range(2)):
                    self.failed.append(f"read before event {i}")
                key = f"{self.load_id}-event-{i:02d}"
                give_up = time.monotonic() + 30  # the replication lag on a busy host, and more
                while time.monotonic() < give_up:
                    status = self.ask(
                        c,
                        "write",
                        "POST",
                        f"/loads/{self.load_id}/events",
                        json={"kind": kind, "stop_seq": stop},
                        headers={"idempotency-key": key},
                    )
                    if status in (201, 202):
                        self.acked.append(key)
                        break
                    if status == 409 and "invalid-transition" in self.answers[-1].detail:
                        self.behind.append(self.answers[-1].at)
                    time.sleep(rng.uniform(0.2, 0.4))
                else:
                    self.failed.append(f"{key} never acknowledged")
                    return
                if time.monotonic() > self.deadline:
                    return
                time.sleep(rng.uniform(0.25, 0.45))


def test_evacuating_us_east_1_under_load_no_driver_notices(api: Api, stack: LocalStack):
    drivers = [Driver(api, d, time.monotonic() + 120) for d in HOME]
    threads = [threading.Thread(target=d.run) for d in drivers]
    # GIVEN ten drivers on their home regions' hostnames, half on each
    for t in threads:
        t.start()
    # WHEN us-east-1 is evacuated a moment into their trips
    time.sleep(1.5)
    commanded = time.monotonic()
    done = run_relay(stack, "region", "evacuate", EAST, "--reason", "game day", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for t in threads:
        t.join(timeout=150)

    # THEN no driver request failed, and every event was acknowledged
    assert [d.failed for d in drivers] == [[]] * len(drivers), [
        (
            d.driver_id,
            d.failed,
            [(round(a.at - commanded, 2), a.status, a.region, a.detail[-60:]) for a in d.answers],
        )
        for d in drivers
        if d.failed
    ]
    for d in drivers:
        assert d.acked == [f"{d.load_id}-event-{i:02d}" for i in range(len(TRIP))]
    # AND the only writes that had to wait met state not yet replicated, after the shift
    behind = sorted(t for d in drivers for t in d.behind)
    assert all(t > commanded for t in behind), behind
    # AND the us-east-1 hostname moved to us-west-2's gateway within seconds of the command
    east = sorted(
        (a for d in drivers if HOME[d.driver_id] == EAST for a in d.answers if a.status),
        key=lambda a: a.at,
    )
    before = [a for a in east if a.at < commanded]
    assert before and all(a.region == EAST for a in before)
    last_home = max((a.at for a in east if a.region == EAST), default=commanded)
    shifted = max(last_home - commanded, 0.0)
    assert shifted < 10, f"us-east-1's traffic took {shifted:.1f} s to move"
    assert [a.region for a in east if a.at > last_home] and all(
        a.region == WEST for a in east if a.at > last_home
    )
    # AND every acknowledged event is applied exactly once, in order, in us-west-2 too
    for region in REGIONS:
        assert wait_until(
            lambda region=region: all(
                len(events_in(stack, region, d.load_id)) >= len(TRIP) for d in drivers
            ),
            timeout=90,
            interval=0.5,
        ), region
        for d in drivers:
            assert events_in(stack, region, d.load_id) == TRIP, (region, d.driver_id)
    # AND the lever is audited and every region's gateways see it
    # (each region's gateways read their own replica of the routing controls)
    for region in REGIONS:
        assert wait_until(
            lambda region=region: (
                regions_view(stack, api, region)["controls"][EAST]["serving"] is False
            ),
            timeout=30,
            interval=1,
        ), region
    assert regions_view(stack, api, EAST)["audit"][0]["why"] == "game day"

    # WHEN it is restored
    done = run_relay(stack, "region", "restore", EAST, "--reason", "game day over", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # THEN the us-east-1 hostname is served by us-east-1 again
    home = {**api.auth(Role.DRIVER, "D-8300"), **host(EAST)}
    assert wait_until(
        lambda: api.http.get("/loads", headers=home).headers.get("relay-region") == EAST,
        timeout=20,
    )


def test_the_last_serving_region_cannot_be_evacuated(api: Api, stack: LocalStack):
    done = run_relay(stack, "region", "evacuate", EAST, "--reason", "drill", timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        refused = run_relay(stack, "region", "evacuate", WEST, "--reason", "drill", timeout=60)
        assert refused.returncode == 2 and "no region serving" in refused.stdout + refused.stderr
        with httpx.Client(base_url=stack.region_gateway_url(WEST), timeout=10) as c:
            r = c.post(
                f"/ops/regions/{WEST}/evacuate",
                json={"reason": "drill"},
                headers=api.auth(Role.OPS),
            )
        assert r.status_code == 409 and r.json()["type"].endswith("safety-rule")
    finally:
        run_relay(stack, "region", "restore", EAST, "--reason", "drill over", timeout=60)


def test_a_write_retried_in_the_other_region_is_applied_once(api: Api, stack: LocalStack):
    """The app's write reached us-east-1, the answer was lost, the retry (same key) lands in
    us-west-2 after a failover: the idempotency record replicated, so it is answered as a
    replay, not applied again."""
    driver, load_id = "D-8390", "L-8390"
    body = demo.assignment(load_id, driver, ROUTE, datetime.now(UTC)).model_dump(mode="json")
    event = {"kind": "arrived", "stop_seq": 1}
    auth = {**api.auth(Role.DRIVER, driver), "idempotency-key": "cross-region-8390-1"}
    with httpx.Client(base_url=stack.region_gateway_url(EAST), timeout=10) as east:
        r = east.post("/dispatch/assignments", json=body, headers=api.auth(Role.DISPATCH))
        assert r.status_code == 201, r.text
        # the driver sees it first (a gateway that has not yet read the end of an earlier
        # test's evacuation still sends loads to the peer region, where it may not be yet)
        sees = api.auth(Role.DRIVER, driver)
        assert wait_until(lambda: east.get(f"/loads/{load_id}", headers=sees).status_code == 200)
        first = east.post(f"/loads/{load_id}/events", json=event, headers=auth)
    assert first.status_code == 201, first.text
    assert wait_until(lambda: events_in(stack, WEST, load_id) == [("arrived", 1)], timeout=20)

    def retried() -> httpx.Response:
        with httpx.Client(base_url=stack.region_gateway_url(WEST), timeout=10) as west:
            return west.post(f"/loads/{load_id}/events", json=event, headers=auth)

    # (until the record's completion replicates, the retry is told to wait: 409 in-progress)
    assert wait_until(lambda: retried().status_code == 201, timeout=20)
    again = retried()
    assert again.headers.get("idempotent-replayed") == "true", again.headers
    assert again.json() == first.json()
    for region in REGIONS:
        assert events_in(stack, region, load_id) == [("arrived", 1)]


def test_a_gate_pass_issued_in_one_region_is_verified_in_the_other(api: Api, stack: LocalStack):
    """One multi-Region signing key: the same kid and keys in both regions, so a gate in the
    region a driver was moved to admits the pass the first region issued."""
    driver, load_id = "D-8391", "L-8391"
    body = demo.assignment(load_id, driver, ROUTE, datetime.now(UTC)).model_dump(mode="json")
    gate = api.auth(Role.GATE, None)
    check = {"facility_id": ROUTE[0]}
    with (
        httpx.Client(base_url=stack.region_gateway_url(EAST), timeout=10) as east,
        httpx.Client(base_url=stack.region_gateway_url(WEST), timeout=10) as west,
    ):
        r = east.post("/dispatch/assignments", json=body, headers=api.auth(Role.DISPATCH))
        assert r.status_code == 201, r.text
        issued = east.post(
            "/gatepass",
            json={"load_id": load_id, "facility_id": ROUTE[0]},
            headers=api.auth(Role.DRIVER, driver),
        )
        assert issued.status_code == 201, issued.text
        token = issued.json()["token"]
        assert east.get("/gatepass/keys").json() == west.get("/gatepass/keys").json()

        def verified() -> dict:
            r = west.post("/gatepass/verify", json={"token": token, **check}, headers=gate)
            assert r.status_code == 200, r.text
            return r.json()

        # (the pass itself reaches us-west-2's table within the replication lag)
        assert wait_until(lambda: verified()["valid"] is True, timeout=20), verified()
        assert verified()["driver_id"] == driver


def test_with_us_east_1_s_loads_tables_gone_its_drivers_keep_their_loads(api, stack):
    east = [d for d, region in HOME.items() if region == EAST]
    # GIVEN us-east-1 serving its drivers live (its breaker closed)
    for d in east:
        headers = {**api.auth(Role.DRIVER, d), **host(EAST)}
        assert wait_until(
            lambda headers=headers: (
                (r := api.http.get("/loads", headers=headers)).status_code == 200
                and "relay-degraded" not in r.headers
                and r.headers["relay-region"] == EAST
            ),
            timeout=30,
        )
    # WHEN its loads tables are deleted (the region's data plane for loads is gone)
    for variable in ("LOADS_TABLE", "LOAD_EVENTS_TABLE"):
        table(stack, EAST, variable).delete()
    # THEN each of its drivers keeps their load on every request
    answers = []
    for _ in range(4):
        for d in east:
            r = api.http.get("/loads", headers={**api.auth(Role.DRIVER, d), **host(EAST)})
            assert r.status_code == 200, (d, r.status_code, r.text)
            assert [ld["load_id"] for ld in r.json()["items"]] == [LOAD_OF[d]]
            answers.append(r)
    # AND once the breaker opened, live from us-west-2's loads through their own gateway
    last = answers[-len(east) :]
    assert all("relay-degraded" not in r.headers for r in last), [r.headers for r in last]
    assert all(r.headers["relay-region"] == EAST for r in last)
    sent = regions_view(stack, api, EAST)["sent_to_peers"]
    assert sent.get(f"loads -> {WEST}", 0) >= len(east), sent
