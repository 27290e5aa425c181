"""Gate pass API against moto: issuing, offline and online verification, revocation, access.

The clock starts at 08:00 UTC. ``put_load`` writes loads straight into the loads table in
the layout the loads module uses; with the demo route F-CHI -> F-IND the windows are
F-CHI 09:00-11:00 and F-IND 13:00-15:00, so a F-CHI pass is valid 07:00-13:00.
"""

from __future__ import annotations

import base64
import hashlib
import json

import boto3
import jwt
import pytest
from fastapi.testclient import TestClient

from module_kit.cells import parse_cells
from module_kit.etag import entity_tag
from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner, PassClaims
from modules.loads.repository import LoadsRepository
from relay import demo
from shared_contracts.identity import Role
from shared_contracts.loads import LoadPublic, LoadStatus, Stop
from tests.conftest import identity_header_for

identity_header = identity_header_for("gatepass")

DRIVER = identity_header(Role.DRIVER, "D-1001")
OTHER = identity_header(Role.DRIVER, "D-1002")
GATE = identity_header(Role.GATE, None)
OPS = identity_header(Role.OPS, None)
DISPATCH = identity_header(Role.DISPATCH, None)


class CountingKms:
    """The real (moto) KMS client, counting get_public_key calls."""

    def __init__(self) -> None:
        self.client = boto3.client("kms")
        self.public_key_calls = 0

    def get_public_key(self, **kw):
        self.public_key_calls += 1
        return self.client.get_public_key(**kw)

    def sign(self, **kw):
        return self.client.sign(**kw)


def uncelled_loads(env: dict[str, str], monkeypatch) -> dict[str, str]:
    """``env`` with LOADS_TABLE one plain table name: its first cell's on a celled stage.
    These tests are of an uncelled stage; test_cells.py has the celled ones."""
    cells = parse_cells(env["LOADS_TABLE"], setting="LOADS_TABLE")
    if cells:
        env = {**env, "LOADS_TABLE": next(iter(cells.values()))}
        monkeypatch.setenv("LOADS_TABLE", env["LOADS_TABLE"])
    return env


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)


@pytest.fixture
def kms(env):
    return CountingKms()


@pytest.fixture
def service(env, kms, clock):
    settings = GatepassSettings()
    return GatepassService(
        GatepassRepository(settings),
        KmsSigner(settings.gatepass_signing_key_id, kms=kms),
        clock=clock,
    )


@pytest.fixture
def client(service):
    return TestClient(create_app(service=service))


def put_load(
    env,
    clock,
    load_id="L-1",
    driver="D-1001",
    route=("F-CHI", "F-IND"),
    status=LoadStatus.ASSIGNED,
    *,
    table: str | None = None,
) -> LoadPublic:
    """Write a load into the loads table (or ``table``) as the loads module would have."""
    plan = demo.assignment(load_id, driver, list(route), clock.now)
    stops = [Stop(seq=i, **p.model_dump()) for i, p in enumerate(plan.stops, 1)]
    load = LoadPublic(
        load_id=load_id,
        driver_id=driver,
        status=status,
        shipper=stops[0].facility,
        consignee=stops[-1].facility,
        stops=stops,
        current_stop=1,
        version=1,
        assigned_at=clock.now,
        updated_at=clock.now,
    )
    boto3.resource("dynamodb").Table(table or env["LOADS_TABLE"]).put_item(
        Item=LoadsRepository.item_of(load)
    )
    return load


def issue(client, load_id="L-1", facility_id="F-CHI", headers=DRIVER):
    return client.post(
        "/gatepass", json={"load_id": load_id, "facility_id": facility_id}, headers=headers
    )


def verify(client, token, facility_id="F-CHI", headers=GATE):
    return client.post(
        "/gatepass/verify", json={"token": token, "facility_id": facility_id}, headers=headers
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- issuing and verifying --------------------------------------------------------------


def test_issued_pass_verifies_at_its_facility(client, env, clock):
    # GIVEN D-1001's load with a 09:00-11:00 window at F-CHI
    put_load(env, clock)
    # WHEN the driver asks for a pass to F-CHI
    r = issue(client)
    # THEN it covers the window with 2 h either side and is QR-ready
    assert r.status_code == 201, r.text
    gate_pass = r.json()
    assert gate_pass["valid_from"] == "2026-11-22T07:00:00Z"
    assert gate_pass["valid_until"] == "2026-11-22T13:00:00Z"
    assert gate_pass["qr_payload"] == gate_pass["token"] and gate_pass["token"].isascii()
    assert (gate_pass["driver_id"], gate_pass["revoked"]) == ("D-1001", False)
    # AND the gate at F-CHI accepts it, learning whose pass it is
    verdict = verify(client, gate_pass["token"]).json()
    assert verdict == {
        "valid": True,
        "reason": "valid",
        "pass_id": gate_pass["pass_id"],
        "driver_id": "D-1001",
        "load_id": "L-1",
        "facility_id": "F-CHI",
        "valid_until": "2026-11-22T13:00:00Z",
        "revocation_checked": True,
    }
    # AND ops may verify too
    assert verify(client, gate_pass["token"], headers=OPS).json()["valid"] is True


def test_pass_verifies_offline_with_only_the_jwks_and_pyjwt(client, env, clock):
    # GIVEN a pass, and the public keys fetched once with no identity
    put_load(env, clock)
    token = issue(client).json()["token"]
    jwks = client.get("/gatepass/keys").json()
    # WHEN a gate verifies it with nothing but PyJWT and the JWKS (no call to the module)
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        issuer="relay-gatepass",
        # times are checked below against the test clock, not the wall clock
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    # THEN the signature holds and the claims say who, what, where and when
    assert header == {"alg": "ES256", "typ": "JWT", "kid": header["kid"]}
    assert (claims["sub"], claims["load_id"], claims["facility_id"]) == ("D-1001", "L-1", "F-CHI")
    assert claims["nbf"] <= clock.now.timestamp() < claims["exp"]
    # AND the kid is the RFC 7638 thumbprint of the published key
    jwk = jwks["keys"][0]
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    ).encode()
    assert header["kid"] == jwk["kid"] == b64url(hashlib.sha256(canonical).digest())
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")


def test_keys_endpoint_needs_no_identity_and_is_cacheable(client):
    r = client.get("/gatepass/keys")
    assert r.status_code == 200
    assert len(r.json()["keys"]) == 1
    assert r.headers["cache-control"].startswith("public")


def test_public_key_is_fetched_from_kms_once(client, env, clock, kms):
    put_load(env, clock)
    issue(client)
    issue(client)
    client.get("/gatepass/keys")
    assert kms.public_key_calls == 1


def _tamper_payload(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = b64url_json(payload)
    claims["facility_id"] = "F-IND"
    return ".".join([header, b64url(json.dumps(claims).encode()), signature])


def _tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[10] ^= 0x01
    return ".".join([header, payload, b64url(bytes(raw))])


def _with_header(token: str, **changes: object) -> str:
    header, payload, signature = token.split(".")
    new = {**b64url_json(header), **changes}
    return ".".join([b64url(json.dumps(new).encode()), payload, signature])


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (_tamper_payload, "bad_signature"),
        (_tamper_signature, "bad_signature"),
        (lambda t: _with_header(t, alg="none"), "bad_signature"),
        (lambda t: _with_header(t, kid="someone-elses-key"), "unknown_key"),
        (lambda t: _with_header(t, kid=["not", "a", "string"]), "malformed"),
        (lambda t: "this-is-not-a-pass-token-at-all", "malformed"),
        (lambda t: t.rsplit(".", 1)[0], "malformed"),
    ],
)
def test_forged_or_garbled_tokens_are_refused_with_a_reason(client, env, clock, forge, reason):
    # GIVEN a genuine pass
    put_load(env, clock)
    token = issue(client).json()["token"]
    # WHEN the gate scans a forged or garbled version of it
    r = verify(client, forge(token), facility_id="F-IND")
    # THEN the answer is a verdict, not an error, and it reveals nothing of the claims
    assert r.status_code == 200
    verdict = r.json()
    assert (verdict["valid"], verdict["reason"]) == (False, reason)
    assert verdict["pass_id"] is verdict["driver_id"] is verdict["load_id"] is None


def test_pass_expires_two_hours_after_the_window(client, env, clock):
    put_load(env, clock)
    token = issue(client).json()["token"]
    clock.advance(hours=4, minutes=59)  # 12:59
    assert verify(client, token).json()["valid"] is True
    clock.advance(minutes=1)  # 13:00 = exp
    verdict = verify(client, token).json()
    assert (verdict["valid"], verdict["reason"]) == (False, "expired")
    assert verdict["pass_id"] and verdict["valid_until"] == "2026-11-22T13:00:00Z"


def test_pass_is_not_valid_until_two_hours_before_the_window(client, env, clock):
    # GIVEN a pass for F-IND, whose window opens at 13:00
    put_load(env, clock)
    token = issue(client, facility_id="F-IND").json()["token"]
    # THEN it is refused at 08:00 and accepted from 11:00
    assert verify(client, token, "F-IND").json()["reason"] == "not_yet_valid"
    clock.advance(hours=3)
    assert verify(client, token, "F-IND").json()["reason"] == "valid"


def test_pass_replayed_at_another_facility_is_refused(client, env, clock):
    # GIVEN a valid F-CHI pass, on a load that also goes to F-IND
    put_load(env, clock)
    token = issue(client).json()["token"]
    # WHEN it is shown at F-IND
    verdict = verify(client, token, facility_id="F-IND").json()
    # THEN F-IND refuses it
    assert (verdict["valid"], verdict["reason"], verdict["facility_id"]) == (
        False,
        "wrong_facility",
        "F-CHI",
    )


def test_revoked_pass_is_refused(client, env, clock):
    put_load(env, clock)
    gate_pass = issue(client).json()
    # WHEN dispatch revokes it
    r = client.post(f"/gatepass/{gate_pass['pass_id']}/revoke", headers=DISPATCH)
    assert r.status_code == 200 and r.json()["revoked"] is True
    # THEN the gate refuses it and the driver sees it revoked
    verdict = verify(client, gate_pass["token"]).json()
    assert (verdict["valid"], verdict["reason"]) == (False, "revoked")
    assert client.get(f"/gatepass/{gate_pass['pass_id']}", headers=DRIVER).json()["revoked"]


def test_revoking_needs_dispatch_or_ops_and_a_known_pass(client, env, clock):
    put_load(env, clock)
    pass_id = issue(client).json()["pass_id"]
    assert client.post(f"/gatepass/{pass_id}/revoke", headers=DRIVER).status_code == 403
    assert client.post(f"/gatepass/{pass_id}/revoke", headers=OPS).status_code == 200
    r = client.post("/gatepass/GP-unknown/revoke", headers=OPS)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_validly_signed_pass_with_no_record_is_refused(client, service, clock):
    # GIVEN a token signed with our key for a pass that was never stored
    token = service.signer.sign(
        PassClaims(
            sub="D-1001",
            jti="GP-ghost",
            load_id="L-1",
            facility_id="F-CHI",
            iat=int(clock.now.timestamp()),
            nbf=int(clock.now.timestamp()),
            exp=int(clock.now.timestamp()) + 3600,
        )
    )
    # THEN the gate refuses it
    assert verify(client, token).json()["reason"] == "unknown_pass"


# --- issuing rules ----------------------------------------------------------------------


@pytest.mark.parametrize("load_id", ["L-6", "L-404"])
def test_pass_for_another_drivers_or_unknown_load_is_not_found(client, env, clock, load_id):
    put_load(env, clock, load_id="L-6", driver="D-1002")
    r = issue(client, load_id=load_id)
    assert r.status_code == 404
    assert r.json()["detail"] == f"load {load_id} not found"
    assert "D-1002" not in r.text


def test_delivered_load_gets_no_pass(client, env, clock):
    put_load(env, clock, status=LoadStatus.DELIVERED)
    r = issue(client)
    assert r.status_code == 409 and r.json()["type"] == "urn:relay:problem:load-delivered"


def test_facility_not_on_the_load_is_refused_clearly(client, env, clock):
    put_load(env, clock)
    r = issue(client, facility_id="F-DET")
    assert r.status_code == 422
    assert r.json()["type"] == "urn:relay:problem:facility-not-on-load"
    assert "F-DET" in r.json()["detail"] and "F-CHI, F-IND" in r.json()["detail"]


def test_no_pass_once_the_window_has_passed(client, env, clock):
    # GIVEN it is 13:00, 2 h after the F-CHI window closed
    put_load(env, clock)
    clock.advance(hours=5)
    # THEN F-CHI gets no pass, while F-IND (13:00-15:00) still does
    r = issue(client)
    assert r.status_code == 409 and r.json()["type"] == "urn:relay:problem:window-passed"
    assert issue(client, facility_id="F-IND").status_code == 201


def test_signing_outage_is_a_503_problem(env, clock):
    # GIVEN a service whose KMS key cannot be used
    settings = GatepassSettings()
    broken = GatepassService(GatepassRepository(settings), KmsSigner("no-such-key"), clock=clock)
    client = TestClient(create_app(service=broken))
    put_load(env, clock)
    # THEN issuing answers 503 with Retry-After, not a 500
    r = issue(client)
    assert r.status_code == 503 and r.headers["retry-after"]
    assert client.get("/gatepass/keys").status_code == 503


# --- reading ----------------------------------------------------------------------------


def test_drivers_list_and_read_their_own_passes_only(client, env, clock):
    put_load(env, clock)
    first = issue(client).json()
    clock.advance(minutes=10)
    second = issue(client, facility_id="F-IND").json()
    # THEN the driver lists them newest first
    items = client.get("/gatepass", headers=DRIVER).json()["items"]
    assert [p["pass_id"] for p in items] == [second["pass_id"], first["pass_id"]]
    # AND nobody else sees them
    assert client.get("/gatepass", headers=OTHER).json()["items"] == []
    assert client.get(f"/gatepass/{first['pass_id']}", headers=OTHER).status_code == 404
    assert client.get(f"/gatepass/{first['pass_id']}", headers=DRIVER).json() == first


def test_the_pass_list_carries_the_strong_etag_of_its_exact_body(client, env, clock):
    put_load(env, clock)
    empty = client.get("/gatepass", headers=DRIVER)
    issue(client)
    # WHEN the driver lists their passes
    r = client.get("/gatepass", headers=DRIVER)
    # THEN the 200 carries the tag of its bytes and content type, a new one for a new list,
    # and the revalidation headers the gateway would add
    assert r.headers["etag"] == entity_tag(r.content, b"application/json").decode()
    assert r.headers["etag"] != empty.headers["etag"]
    assert r.headers["cache-control"] == "private, no-cache"
    assert r.headers["vary"] == "Authorization"
    # AND the module leaves If-None-Match to the gateway: always the full list
    again = client.get("/gatepass", headers={**DRIVER, "if-none-match": r.headers["etag"]})
    assert again.status_code == 200 and again.content == r.content
    # AND the keys keep their own public caching, with no tag
    keys = client.get("/gatepass/keys")
    assert "etag" not in keys.headers and keys.headers["cache-control"].startswith("public")


# --- access and input -------------------------------------------------------------------


@pytest.mark.parametrize("headers", [DRIVER, DISPATCH])
def test_only_gates_and_ops_verify(client, headers):
    r = verify(client, "x" * 40, headers=headers)
    assert r.status_code == 403


def test_module_refuses_calls_without_the_gateway_identity(client):
    assert client.get("/gatepass").status_code == 401
    assert verify(client, "x" * 40, headers={}).status_code == 401


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [
        ("/gatepass", b"{not json", DRIVER, 400),
        ("/gatepass", b'{"load_id": "L-1", "facility_id": "F-CHI", "extra": 1}', DRIVER, 422),
        ("/gatepass", b'{"load_id": "../etc", "facility_id": "F-CHI"}', DRIVER, 422),
        ("/gatepass/verify", b'{"token": "short", "facility_id": "F-CHI"}', GATE, 422),
    ],
)
def test_bad_input_gets_a_problem_envelope(client, path, body, headers, status):
    r = client.post(path, content=body, headers={**headers, "content-type": "application/json"})
    assert r.status_code == status
    assert r.json()["status"] == status and r.json()["type"].startswith("urn:relay:problem:")
