"""The gateway as a consumer of loads, gatepass and navigate: each test drives the real
gateway against a Pact mock server answering as the gateway's pact says, then takes the
module down and checks what the gateway serves from what it kept (its own reading code,
on the pact's bodies), and writes the pact: contracts/pacts/gateway-<module>.json is
rewritten when it changed, and the test fails until the new file is committed."""

from __future__ import annotations

import json
from datetime import timedelta

from pact import Pact

from shared_contracts.gatepass import GatePassList, GatePassVerdict, Jwks
from shared_contracts.identity import Role
from shared_contracts.loads import LoadListView, LoadView
from shared_contracts.navigate import Directions
from tests.contracts import gateway_pacts, states
from tests.contracts.gateway import gateway
from tests.contracts.pacts import EXAMPLE_TIME, write_pact
from tests.fakes import WallClock


def gateway_pact(provider: str) -> Pact:
    return Pact("gateway", provider).with_specification("V4")


def degraded(answer, module: str, fallback: str = "last-known-good") -> bool:
    marker = answer.headers.get("relay-degraded", "")
    return answer.status_code == 200 and marker.startswith(f"module={module}; fallback={fallback}")


def test_gateway_keeps_a_drivers_loads_and_reads_them_back(tmp_path):
    pact = gateway_pact("loads")
    gateway_pacts.loads_interactions(pact)
    with pact.serve(addr="127.0.0.1") as loads, gateway({"loads": str(loads.url)}, tmp_path) as gw:
        # GIVEN the gateway saw the driver's loads and one load, live
        listing = gw.client.get("/loads", headers=gw.auth())
        detail = gw.client.get(f"/loads/{states.LOAD}", headers=gw.auth())
        assert listing.status_code == detail.status_code == 200
        assert "relay-degraded" not in listing.headers
        # WHEN loads fails
        gw.module_down("loads")
        kept_list = gw.client.get("/loads", headers=gw.auth())
        kept_load = gw.client.get(f"/loads/{states.LOAD}", headers=gw.auth())
    # THEN the gateway serves both from its copies, read as LoadListView / LoadView
    assert degraded(kept_list, "loads") and degraded(kept_load, "loads")
    kept = LoadListView.model_validate_json(kept_list.content)
    assert [ld.load_id for ld in kept.items] == ["L-1"]
    assert LoadView.model_validate_json(kept_load.content).stops[0].facility.facility_id == "F-CHI"
    assert (reason := write_pact(pact, "gateway", "loads", tmp_path / "out")) is None, reason


def test_gateway_keeps_passes_and_keys_and_learns_revocations(tmp_path):
    pact = gateway_pact("gatepass")
    gateway_pacts.gatepass_interactions(pact)
    revoked = gateway_pacts.pass_token(gateway_pacts.REVOKED_PASS_ID, -1, 5)
    # The examples' passes are valid from 07:00 to 13:00; the gateway's clock says 08:30.
    clock = WallClock(EXAMPLE_TIME + timedelta(minutes=30))
    with (
        pact.serve(addr="127.0.0.1") as gatepass,
        gateway({"gatepass": str(gatepass.url)}, tmp_path, wall_clock=clock) as gw,
    ):
        # GIVEN the gateway saw the driver's passes, the keys, and a verdict "revoked"
        assert gw.client.get("/gatepass", headers=gw.auth()).status_code == 200
        assert gw.client.get("/gatepass/keys").status_code == 200
        scan = {"token": revoked, "facility_id": "F-CHI"}
        gate = gw.auth(Role.GATE, None)
        live = gw.client.post("/gatepass/verify", json=scan, headers=gate)
        assert live.status_code == 200 and live.json()["reason"] == "revoked"
        # WHEN gatepass fails
        gw.module_down("gatepass")
        kept_passes = gw.client.get("/gatepass", headers=gw.auth())
        kept_keys = gw.client.get("/gatepass/keys")
        offline = gw.client.post("/gatepass/verify", json=scan, headers=gate)
        valid_one = {**scan, "token": gateway_pacts.pass_token(gateway_pacts.PASS_ID, -1, 5)}
        offline_valid = gw.client.post("/gatepass/verify", json=valid_one, headers=gate)
    # THEN the passes and keys come from the copies; the pass seen revoked stays revoked
    # offline, judged with the kept keys, while another pass signed by that key is valid
    assert degraded(kept_passes, "gatepass") and degraded(kept_keys, "gatepass")
    assert [p.pass_id for p in GatePassList.model_validate_json(kept_passes.content).items] == [
        gateway_pacts.PASS_ID
    ]
    assert [k.kid for k in Jwks.model_validate_json(kept_keys.content).keys] == [
        gateway_pacts.EXAMPLE_JWK.kid
    ]
    verdict = GatePassVerdict.model_validate_json(offline.content)
    assert degraded(offline, "gatepass", "static")
    assert (verdict.valid, verdict.reason, verdict.revocation_checked) == (False, "revoked", False)
    assert GatePassVerdict.model_validate_json(offline_valid.content).valid
    assert (reason := write_pact(pact, "gateway", "gatepass", tmp_path / "out")) is None, reason


def test_gateway_keeps_entry_instructions_for_static_directions(tmp_path):
    navigate_pact = gateway_pact("navigate")
    gateway_pacts.navigate_interactions(navigate_pact)
    loads_pact = gateway_pact("loads")  # the load's next stop: test above writes this pact
    gateway_pacts.loads_interactions(loads_pact)
    query = {"load_id": states.LOAD, **gateway_pacts.YARD}
    with (
        navigate_pact.serve(addr="127.0.0.1") as navigate,
        loads_pact.serve(addr="127.0.0.1") as loads,
        gateway({"navigate": str(navigate.url), "loads": str(loads.url)}, tmp_path) as gw,
    ):
        # GIVEN the gateway saw the driver's loads and directions to the next stop
        assert gw.client.get("/loads", headers=gw.auth()).status_code == 200
        assert gw.client.get(f"/loads/{states.LOAD}", headers=gw.auth()).status_code == 200
        assert gw.client.get("/navigate", params=query, headers=gw.auth()).status_code == 200
        # WHEN navigate fails
        gw.module_down("navigate")
        static = gw.client.get("/navigate", params=query, headers=gw.auth())
    # THEN the gateway builds directions itself, with the entry instructions it kept
    assert degraded(static, "navigate", "static")
    directions = Directions.model_validate_json(static.content)
    assert directions.destination.facility_id == "F-CHI"
    assert directions.destination.entry_instructions == "Enter from gate 3; show pass at the shack."
    assert directions.destination.dock_hours is not None
    assert directions.destination.dock_hours.opens == "05:00"
    assert json.loads(static.content)["engine"] == "gateway-static"
    assert (reason := write_pact(navigate_pact, "gateway", "navigate", tmp_path / "out")) is None, (
        reason
    )
