"""Signing-key rotation: passes signed by a retired key keep verifying until it is dropped.

Key A is the template's ``SigningKey``; key B is created here, as an operator would before
rotating. Each ``deploy(...)`` builds the module as a fresh process would see it after a
deployment with ``GATEPASS_SIGNING_KEY_ID`` / ``GATEPASS_RETIRED_KEY_IDS`` set: new signer,
empty public key cache. The clock starts at 08:00 UTC; a F-CHI pass is valid 07:00-13:00.
"""

from __future__ import annotations

import hashlib
import json
import logging

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi.testclient import TestClient

from modules.gatepass.app import create_app
from modules.gatepass.config import GatepassSettings
from modules.gatepass.repository import GatepassRepository
from modules.gatepass.service import GatepassService
from modules.gatepass.signing import KmsSigner
from relay.cloud import ROOT, LocalCloud
from shared_contracts.identity import Role
from tests.conftest import TEST_IDENTITY_PUBLIC_KEY, identity_header_for
from tests.modules.gatepass.test_api import (
    CountingKms,
    b64url,
    issue,
    put_load,
    uncelled_loads,
    verify,
)

identity_header = identity_header_for("gatepass")
GATE = identity_header(Role.GATE, None)


@pytest.fixture
def env(deployed, monkeypatch):
    return uncelled_loads(deployed.use_env(monkeypatch, "GatepassFunction"), monkeypatch)


@pytest.fixture
def key_a(env) -> str:
    """The key the stack was deployed with: the current key before the rotation."""
    return env["GATEPASS_SIGNING_KEY_ID"]


@pytest.fixture
def key_b(env) -> str:
    """A second P-256 signing key, referred to by ARN as RetiredSigningKeyIds allows."""
    meta = boto3.client("kms").create_key(
        KeySpec="ECC_NIST_P256",
        KeyUsage="SIGN_VERIFY",
        Description="gate passes, 2nd key",
    )["KeyMetadata"]
    return meta["Arn"]


@pytest.fixture
def kms(env):
    return CountingKms()


@pytest.fixture
def deploy(monkeypatch, clock, kms):
    """``deploy(current, retired)``: the module after a deployment with those keys."""

    def deploy(current: str, retired: str = "") -> TestClient:
        monkeypatch.setenv("GATEPASS_SIGNING_KEY_ID", current)
        monkeypatch.setenv("GATEPASS_RETIRED_KEY_IDS", retired)
        settings = GatepassSettings()
        signer = KmsSigner(
            settings.gatepass_signing_key_id, retired_key_ids=settings.retired_key_ids, kms=kms
        )
        service = GatepassService(GatepassRepository(settings), signer, clock=clock)
        return TestClient(create_app(service=service))

    return deploy


def thumbprint(key_id: str) -> str:
    """The RFC 7638 kid of a KMS key, computed independently of the module."""
    der = boto3.client("kms").get_public_key(KeyId=key_id)["PublicKey"]
    numbers = load_der_public_key(der).public_numbers()
    members = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def verify_offline(token: str, jwks: dict, clock) -> dict:
    """What a gate does with nothing but the published JWKS and PyJWT."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        issuer="relay-gatepass",
        # times are checked below against the test clock, not the wall clock
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert claims["nbf"] <= clock.now.timestamp() < claims["exp"]
    return claims


def kid_of(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


@pytest.fixture
def old_pass(env, clock, deploy, key_a) -> dict:
    """A F-CHI pass D-1001 got before the rotation, signed by key A."""
    put_load(env, clock)
    r = issue(deploy(current=key_a))
    assert r.status_code == 201, r.text
    return r.json()


# --- during the rotation ----------------------------------------------------------------


def test_pass_signed_before_the_rotation_still_verifies_after_it(
    old_pass, deploy, key_a, key_b, clock
):
    # GIVEN a pass signed by key A
    assert old_pass["kid"] == kid_of(old_pass["token"]) == thumbprint(key_a)
    # WHEN the module is redeployed signing with B and with A retired
    client = deploy(current=key_b, retired=key_a)
    clock.advance(minutes=30)
    # THEN the gate still accepts the pass online
    verdict = verify(client, old_pass["token"]).json()
    assert (verdict["valid"], verdict["reason"], verdict["pass_id"]) == (
        True,
        "valid",
        old_pass["pass_id"],
    )
    # AND offline, with only the published keys and PyJWT
    claims = verify_offline(old_pass["token"], client.get("/gatepass/keys").json(), clock)
    assert (claims["jti"], claims["facility_id"]) == (old_pass["pass_id"], "F-CHI")


def test_after_the_rotation_new_passes_are_signed_by_the_new_key(
    old_pass, deploy, key_a, key_b, clock
):
    # GIVEN the module rotated to B
    client = deploy(current=key_b, retired=key_a)
    # WHEN the driver gets another pass
    r = issue(client, facility_id="F-IND")
    # THEN it carries B's kid, in the pass and in the token header
    assert r.status_code == 201, r.text
    new_pass = r.json()
    assert new_pass["kid"] == kid_of(new_pass["token"]) == thumbprint(key_b)
    assert new_pass["kid"] != old_pass["kid"]
    # AND it verifies online (from 11:00, 2 h before its window) and offline
    clock.advance(hours=3)
    assert verify(client, new_pass["token"], facility_id="F-IND").json()["reason"] == "valid"
    verify_offline(new_pass["token"], client.get("/gatepass/keys").json(), clock)


def test_jwks_lists_the_current_key_first_then_the_retired_one(env, key_a, key_b, monkeypatch):
    # GIVEN the module as the handler builds it from the environment of a rotated deployment
    monkeypatch.setenv("GATEPASS_SIGNING_KEY_ID", key_b)
    monkeypatch.setenv("GATEPASS_RETIRED_KEY_IDS", key_a)
    client = TestClient(create_app(GatepassSettings()))
    # WHEN a gate fetches the keys, with no identity at all
    r = client.get("/gatepass/keys")
    # THEN both keys are published, B (which signs) first, each kid its RFC 7638 thumbprint
    assert r.status_code == 200, r.text
    assert [k["kid"] for k in r.json()["keys"]] == [thumbprint(key_b), thumbprint(key_a)]
    assert {(k["kty"], k["crv"], k["alg"], k["use"]) for k in r.json()["keys"]} == {
        ("EC", "P-256", "ES256", "sig")
    }
    assert r.headers["cache-control"].startswith("public")


def test_retired_key_does_not_stretch_a_pass_past_its_expiry(old_pass, deploy, key_a, key_b, clock):
    # GIVEN the rotation happened while A's pass (valid until 13:00) was out
    client = deploy(current=key_b, retired=key_a)
    # THEN it is accepted up to its expiry and refused from then on, like any pass
    clock.advance(hours=4, minutes=59)
    assert verify(client, old_pass["token"]).json()["reason"] == "valid"
    clock.advance(minutes=1)
    assert verify(client, old_pass["token"]).json()["reason"] == "expired"


# --- after the rotation -----------------------------------------------------------------


def test_dropping_the_retired_key_refuses_its_passes_only(old_pass, deploy, key_a, key_b, clock):
    # GIVEN a pass signed by B after the rotation
    new_pass = issue(deploy(current=key_b, retired=key_a), facility_id="F-IND").json()
    # WHEN the operator redeploys without A in the retired keys, at 11:00, while A's pass
    # (until 13:00) and B's pass (from 11:00) are both within their validity
    client = deploy(current=key_b, retired="")
    clock.advance(hours=3)
    # THEN A's pass is refused as signed by an unknown key, revealing nothing of its claims
    verdict = verify(client, old_pass["token"]).json()
    assert (verdict["valid"], verdict["reason"], verdict["pass_id"]) == (False, "unknown_key", None)
    # AND B's pass is still accepted
    assert verify(client, new_pass["token"], facility_id="F-IND").json()["reason"] == "valid"
    # AND only B is published any more
    assert [k["kid"] for k in client.get("/gatepass/keys").json()["keys"]] == [thumbprint(key_b)]


def test_each_public_key_is_fetched_from_kms_once_per_process(old_pass, deploy, key_a, key_b, kms):
    # GIVEN a freshly rotated process
    client = deploy(current=key_b, retired=key_a)
    kms.public_key_calls = 0
    # WHEN it signs, verifies old and new passes and serves the keys repeatedly
    new_pass = issue(client, facility_id="F-IND").json()
    for _ in range(2):
        verify(client, old_pass["token"])
        verify(client, new_pass["token"], facility_id="F-IND")
        client.get("/gatepass/keys")
    # THEN KMS was asked once per key
    assert kms.public_key_calls == 2


def test_retired_key_kms_refuses_is_left_out_not_fatal(old_pass, deploy, key_a, key_b, kms, caplog):
    # GIVEN a retired list with a key that no longer exists, A twice (id and ARN) and B itself
    gone = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    a_arn = boto3.client("kms").describe_key(KeyId=key_a)["KeyMetadata"]["Arn"]
    client = deploy(current=key_b, retired=f" {gone}, {key_a},{a_arn}, {key_b},")
    kms.public_key_calls = 0
    # WHEN gates verify and fetch the keys
    with caplog.at_level(logging.ERROR, logger="relay.gatepass"):
        assert verify(client, old_pass["token"]).json()["reason"] == "valid"
        keys = client.get("/gatepass/keys").json()["keys"]
    # THEN each usable key is published once, current first, and the gone one is left out
    assert [k["kid"] for k in keys] == [thumbprint(key_b), thumbprint(key_a)]
    # AND the operator is told once, and KMS is not asked again about it
    assert len([r for r in caplog.records if gone in r.getMessage()]) == 1
    assert kms.public_key_calls == 4  # B, the gone key, A by id, A by ARN: once each


# --- configuration ----------------------------------------------------------------------


def test_retired_key_ids_setting_is_a_comma_separated_list(env, monkeypatch):
    monkeypatch.setenv("GATEPASS_RETIRED_KEY_IDS", " key-1 ,, arn:aws:kms:r:1:key/k-2 ,")
    assert GatepassSettings().retired_key_ids == ("key-1", "arn:aws:kms:r:1:key/k-2")
    monkeypatch.setenv("GATEPASS_RETIRED_KEY_IDS", "")
    assert GatepassSettings().retired_key_ids == ()


def test_template_parameter_reaches_the_function_as_retired_key_ids(aws):
    # GIVEN what the gatepass stack reads from SSM (the platform and loads stacks publish
    # it), the loads stack's values both uncelled and per cell (a celled stage's)
    ssm = boto3.client("ssm")
    loads = {"loads": "loads", **{f"loads/cell-{n}": f"loads-cell-{n}" for n in (1, 2, 3, 4)}}
    for stage in ("plain", "rotated"):
        published = {"platform/identity-public-key": TEST_IDENTITY_PUBLIC_KEY}
        for path, table in loads.items():
            published[f"{path}/table-name"] = table
            published[f"{path}/table-arn"] = (
                f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}"
            )
        for name, value in published.items():
            ssm.put_parameter(Name=f"/relay/{stage}/{name}", Value=value, Type="String")
    # AND the gatepass stack deployed alone, once with its defaults and once rotated
    cloud = LocalCloud(prefix="rotation")
    template = ROOT / "modules" / "gatepass" / "template.yaml"
    plain = cloud.deploy(template, {"Stage": "plain"}, name="plain")
    cloud2 = LocalCloud(prefix="rotated")
    rotated = cloud2.deploy(
        template, {"Stage": "rotated", "RetiredSigningKeyIds": "key-a,key-b"}, name="rotated"
    )
    # THEN RetiredSigningKeyIds defaults to none and is handed over as given
    assert cloud.function_env(plain, "GatepassFunction")["GATEPASS_RETIRED_KEY_IDS"] == ""
    env = cloud2.function_env(rotated, "GatepassFunction")
    assert env["GATEPASS_RETIRED_KEY_IDS"] == "key-a,key-b"
    assert env["GATEPASS_SIGNING_KEY_ID"] not in ("", "key-a", "key-b")
