"""A contract that evolves, on the real local stack: the loads team ships a version whose
loads carry a field nobody else knows yet (``hazmat``), built from a copy of the sources,
and it runs beside navigate, gatepass and the gateway's fallbacks, which were not
redeployed. Every driver flow still works, and during a loads outage the fallbacks serve
copies taken before the change (without the field) and after it (with it, kept as loads
sent it), from the gateway's memory and from the fallback store alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pact import Verifier

from relay import demo
from relay.release.deploy import directory_version
from relay.release.faulty import source_copy
from relay.stack import LocalStack, free_port
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.identity import Role
from tests.integration.conftest import Api, wait_until

CONTRACT = Path("shared_contracts/loads.py")
ADDED = (
    "    commodity: str | None = None\n    shipper: FacilityPublic\n",
    "    commodity: str | None = None\n    hazmat: bool = False\n    shipper: FacilityPublic\n",
)
AT_CHICAGO = {"load_id": "", "lat": 41.88, "lon": -87.63}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The gateway re-reads where each module is (SSM) every second, not every minute: the
    new version is reached soon after it is promoted."""
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        gateway_overrides={"RELAY_UPSTREAM_REFRESH_SECONDS": "1"},
    ) as s:
        yield s


def with_added_field(tmp: Path) -> tuple[Path, str]:
    """The modules' sources with ``LoadPublic`` gaining a field, as the loads team ships it."""
    tree = source_copy(tmp / "hazmat", "hazmat")
    contract = tree / CONTRACT
    text = contract.read_text()
    assert ADDED[0] in text
    contract.write_text(text.replace(*ADDED))
    return tree, directory_version(tree)


def assign(api: Api, load_id: str, driver: str) -> dict:
    command = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], datetime.now(UTC))
    r = api.http.post(
        "/dispatch/assignments",
        json=command.model_dump(mode="json"),
        headers=api.auth(Role.DISPATCH, None),
    )
    assert r.status_code == 201, r.text
    return r.json()


def marker(r) -> DegradedMarker:
    return DegradedMarker.parse(r.headers["relay-degraded"])


def test_loads_adds_a_field_and_every_driver_flow_still_works(api, stack, tmp_path):
    before, after, never_called = "D-7101", "D-7102", "D-7103"
    # GIVEN a load assigned and read by its driver before the change (the gateway keeps it)
    assert "hazmat" not in assign(api, "L-7101", before)
    seen = api.http.get("/loads", headers=api.auth(Role.DRIVER, before))
    assert seen.status_code == 200 and "hazmat" not in seen.json()["items"][0]

    # WHEN loads ships a version whose loads carry a new field, and it takes all traffic
    tree, version = with_added_field(tmp_path)
    stack.start_version("loads", tree, version)
    stack.promote_version("loads", version)
    assign(api, "L-7199", "D-7199")
    assert wait_until(lambda: "hazmat" in probe(api), timeout=30)

    # THEN loads assigned now carry it, live, and every other module still reads them
    assert assign(api, "L-7102", after)["hazmat"] is False
    assign(api, "L-7103", never_called)
    driver = api.auth(Role.DRIVER, after)
    live = api.http.get("/loads/L-7102", headers=driver)
    assert live.status_code == 200 and live.json()["hazmat"] is False
    assert "relay-degraded" not in live.headers
    directions = api.http.get(
        "/navigate", params={**AT_CHICAGO, "load_id": "L-7102"}, headers=driver
    )
    assert directions.status_code == 200, directions.text
    assert "relay-degraded" not in directions.headers  # navigate read the new record live
    gate_pass = api.http.post(
        "/gatepass",
        json={"load_id": "L-7102", "facility_id": "F-CHI"},
        headers={**driver, "idempotency-key": "pass-7102"},
    )
    assert gate_pass.status_code == 201, gate_pass.text  # gatepass read it too
    arrived = api.http.post(
        "/loads/L-7102/events",
        json={"kind": "arrived", "stop_seq": 1},
        headers={**driver, "idempotency-key": "arrive-7102"},
    )
    assert arrived.status_code == 201, arrived.text
    listing = api.http.get("/loads", headers=driver)  # the copy taken after the change
    assert listing.status_code == 200 and listing.json()["items"][0]["hazmat"] is False

    # AND the projector took the new records into the fallback store
    store = api.aws_resource("dynamodb").Table(
        stack.function_env("GatewayFunction")["RELAY_FALLBACK_STORE_TABLE"]
    )
    key = {"pk": f"driver#{never_called}", "sk": "load#L-7103"}
    assert wait_until(lambda: "hazmat" in store.get_item(Key=key).get("Item", {}).get("doc", ""))

    # WHEN loads goes down
    stack.stop_process("loads")
    try:
        # THEN the copy from before the change is served as it was, without the field
        old = api.http.get("/loads", headers=api.auth(Role.DRIVER, before))
        assert old.status_code == 200, old.text
        assert marker(old).fallback == FallbackKind.LAST_KNOWN_GOOD
        assert [i["load_id"] for i in old.json()["items"]] == ["L-7101"]
        assert "hazmat" not in old.json()["items"][0]
        # AND the copy from after it with the field, as loads sent it
        new = api.http.get("/loads", headers=driver)
        assert new.status_code == 200 and marker(new).fallback == FallbackKind.LAST_KNOWN_GOOD
        assert new.json()["items"][0]["hazmat"] is False
        # AND a driver who never called gets theirs from the store, field included
        stored = api.http.get("/loads", headers=api.auth(Role.DRIVER, never_called))
        assert stored.status_code == 200, stored.text
        assert marker(stored).age is not None
        assert stored.json()["items"][0]["load_id"] == "L-7103"
        assert stored.json()["items"][0]["hazmat"] is False
        # AND navigate and gate passes go on (they read the loads table, not the module)
        again = api.http.get(
            "/navigate", params={**AT_CHICAGO, "load_id": "L-7102"}, headers=driver
        )
        assert again.status_code == 200 and "relay-degraded" not in again.headers
        passes = api.http.get("/gatepass", headers=driver)
        assert passes.status_code == 200 and len(passes.json()["items"]) == 1
        # AND a reported event is accepted for later
        departed = api.http.post(
            "/loads/L-7102/events",
            json={"kind": "departed", "stop_seq": 1},
            headers={**driver, "idempotency-key": "depart-7102"},
        )
        assert departed.status_code == 202, departed.text
    finally:
        stack.start_process("loads")

    # WHEN loads (the new version) returns, THEN the deferred event is applied once
    def departed_applied() -> bool:
        r = api.http.get("/loads/L-7102", headers=driver)
        return r.status_code == 200 and r.json()["status"] == "in_transit"

    assert wait_until(departed_applied, timeout=60)
    load = api.http.get("/loads/L-7102", headers=driver).json()
    assert load["version"] == 3 and load["hazmat"] is False


def probe(api: Api) -> str:
    """A probe driver's loads, as the gateway answers them now."""
    return api.http.get("/loads", headers=api.auth(Role.DRIVER, "D-7199")).text


# --- The apps in the field, through the whole stack -----------------------------------------

PACTS = Path(__file__).resolve().parents[2] / "contracts" / "pacts"
PACT_DRIVER, PACT_LOAD = "D-1001", "L-1"  # as the recorded interactions name them


class AppStates:
    """The provider states the recorded app interactions name, set up through the stack as
    dispatch and the driver would (a fresh L-1 for each interaction: the recordings report
    the same arrival)."""

    def __init__(self, api: Api, stack: LocalStack) -> None:
        self.api = api
        env = stack.function_env("LoadsFunction")
        dynamodb = api.aws_resource("dynamodb")
        self.loads = dynamodb.Table(env["LOADS_TABLE"])
        self.events = dynamodb.Table(env["LOAD_EVENTS_TABLE"])

    def __call__(self, state: str, action: str = "setup", parameters: dict | None = None) -> None:
        if action != "setup" or not state:
            return
        if state == f"driver {PACT_DRIVER} has a message from dispatch":
            r = self.api.http.post(
                "/dispatch/messages",
                json={"driver_id": PACT_DRIVER, "body": "Dock 4 is free"},
                headers=self.api.auth(Role.DISPATCH, None),
            )
            assert r.status_code == 201, r.text
            return
        self.fresh_load()
        if "gate pass" in state:
            r = self.api.http.post(
                "/gatepass",
                json={"load_id": PACT_LOAD, "facility_id": "F-CHI"},
                headers=self.api.auth(Role.DRIVER, PACT_DRIVER),
            )
            assert r.status_code == 201, r.text

    def fresh_load(self) -> None:
        events = self.events.query(
            KeyConditionExpression="load_id = :l", ExpressionAttributeValues={":l": PACT_LOAD}
        )["Items"]
        with self.events.batch_writer() as batch:
            for item in events:
                batch.delete_item(Key={"load_id": item["load_id"], "seq": item["seq"]})
        self.loads.delete_item(Key={"load_id": PACT_LOAD})
        assign(self.api, PACT_LOAD, PACT_DRIVER)


@pytest.mark.parametrize("app_version", ["5.0", "5.1"])
def test_the_two_previous_apps_recorded_interactions_pass_through_the_stack(
    api, stack, app_version
):
    # GIVEN what app <version> was recorded calling and reading, per module
    files = sorted(PACTS.glob(f"relay-app-{app_version}-*.json"))
    assert {f.stem.rsplit("-", 1)[1] for f in files} == {"loads", "gatepass", "navigate", "message"}
    # WHEN each interaction is replayed against the gateway, as that app, with a token the
    # stack's issuer signed in place of the recorded one
    token = api.auth(Role.DRIVER, PACT_DRIVER)["authorization"]
    verifier = (
        Verifier("relay-gateway", host="127.0.0.1")
        .add_transport(url=stack.gateway_url)
        .add_custom_header("Authorization", token)
        .state_handler(AppStates(api, stack))
    )
    for path in files:
        verifier.add_source(path)
    # THEN every answer is what that app reads
    try:
        verifier.verify()
    except RuntimeError:
        pytest.fail(f"app {app_version} broke:\n{verifier.output(strip_ansi=True)}")


def test_an_app_older_than_the_minimum_is_told_to_update(api):
    driver = api.auth(Role.DRIVER, "D-1001")
    old = api.http.get("/loads", headers={**driver, "relay-app-version": "4.9.2"})
    assert old.status_code == 426, old.text
    problem = old.json()
    assert problem["type"].endswith("upgrade-required") and "5.0" in problem["detail"]
    oldest_supported = api.http.get("/loads", headers={**driver, "relay-app-version": "5.0.0"})
    assert oldest_supported.status_code == 200
    unversioned = api.http.get("/loads", headers=driver)  # consoles and tools: served
    assert unversioned.status_code == 200
