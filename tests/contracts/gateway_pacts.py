"""The gateway's interactions with each module: what it asks, and what it needs from the
answers it keeps (gateway/resilience/fallbacks.py) — no more.

- loads: a driver's loads and one load, kept as last-known-good and read back with
  ``LoadListView`` / ``LoadView`` (tolerant readers): every field those require, none
  they do not (the app's own pacts say what the app reads of the copies it is served).
- gatepass: a driver's passes (kept, checked for validity and revocation), the public
  keys (kept for offline verification), and a verdict ``revoked`` (its pass remembered
  as revoked).
- navigate: directions, of which the gateway keeps only the destination's entry
  instructions and dock hours (for static directions).

Examples are fixed (the files are compared with the committed ones); the matchers say
what may vary.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from pact import Pact, generate, match

from modules.gatepass.signing import jwk_of
from shared_contracts.identity import Role
from tests.contracts import states
from tests.contracts.pacts import EXAMPLE_TIME, ISO_DATETIME, identity_matcher

JSON = "application/json"


def iso(hours: float) -> str:
    """An example time ``hours`` after the examples' "now" (RFC 3339, as modules write it)."""
    return (EXAMPLE_TIME + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def timestamp(hours: float) -> Any:
    return match.regex(iso(hours), regex=ISO_DATETIME)


def facility(facility_id: str, name: str, lat: float, lon: float) -> dict[str, Any]:
    return {
        "facility_id": match.like(facility_id),
        "name": match.like(name),
        "address": match.like(f"{name}, street and town"),
        "lat": match.number(lat),
        "lon": match.number(lon),
    }


CHICAGO = facility("F-CHI", "Chicago Cross-Dock", 41.8155, -87.7245)


def stop(seq: int, where: dict[str, Any], window_in_hours: float) -> dict[str, Any]:
    return {
        "seq": match.integer(seq),
        "facility": where,
        "window_start": timestamp(window_in_hours),
        "window_end": timestamp(window_in_hours + 2),
    }


# What LoadView requires: the fallbacks order loads by status and first window, and static
# directions drive to the current stop's facility. Any status string is read.
LOAD = {
    "load_id": match.like(states.LOAD),
    "driver_id": match.like(states.DRIVER),
    "status": match.like("assigned"),
    "stops": match.each_like(stop(1, CHICAGO, 1), min=1),
    "current_stop": match.integer(1),
}


def loads_interactions(pact: Pact) -> None:
    (
        pact.upon_receiving("the gateway asks for a driver's loads")
        .given(states.LOAD_ASSIGNED)
        .with_request("GET", "/loads")
        .with_header("x-relay-identity", identity_matcher("loads"))
        .will_respond_with(200)
        .with_body({"items": match.each_like(LOAD)}, content_type=JSON)
    )
    (
        pact.upon_receiving("the gateway asks for one of a driver's loads")
        .given(states.LOAD_ASSIGNED)
        .with_request("GET", f"/loads/{states.LOAD}")
        .with_header("x-relay-identity", identity_matcher("loads"))
        .will_respond_with(200)
        .with_body(LOAD, content_type=JSON)
    )


# --- gatepass --------------------------------------------------------------------------------

# The signing key of the examples (a fixed P-256 key: the same JWKS on every run). The
# consumer test signs a pass with it, as the module's KMS key would, to check the offline
# verdict the gateway gives with the keys it kept.
EXAMPLE_PASS_KEY = ec.derive_private_key(0x5EED_0F_9A7E_9A55, ec.SECP256R1())
EXAMPLE_JWK = jwk_of(EXAMPLE_PASS_KEY.public_key())
PASS_ID = "GP-0f8e2d4c6a9b4e1f8c3d5a7b9e1f2a3c"  # the driver's pass
REVOKED_PASS_ID = "GP-7c1d9e3b5a2f4c8e9d0b1a3c5e7f9b2d"  # a pass a gate scans, revoked
# A pass token as the app shows it in the QR code (this one is signed by nobody).
EXAMPLE_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJHUC0xIn0.c2lnbmF0dXJlLW9mLWFuLWV4YW1wbGU"


def pass_token(pass_id: str, valid_from_hours: float, valid_until_hours: float) -> str:
    """A pass signed with :data:`EXAMPLE_PASS_KEY` (as the gatepass module signs one)."""
    claims = {
        "iss": "relay-gatepass",
        "sub": states.DRIVER,
        "jti": pass_id,
        "load_id": states.LOAD,
        "facility_id": states.ROUTE[0],
        "iat": int(EXAMPLE_TIME.timestamp()),
        "nbf": int(EXAMPLE_TIME.timestamp() + valid_from_hours * 3600),
        "exp": int(EXAMPLE_TIME.timestamp() + valid_until_hours * 3600),
    }
    return jwt.encode(claims, EXAMPLE_PASS_KEY, algorithm="ES256", headers={"kid": EXAMPLE_JWK.kid})


# What GatePassPublic requires, and ``revoked``, which the gateway reads.
GATE_PASS = {
    "pass_id": match.like(PASS_ID),
    "driver_id": match.like(states.DRIVER),
    "load_id": match.like(states.LOAD),
    "facility_id": match.like(states.ROUTE[0]),
    "valid_from": timestamp(-1),
    "valid_until": timestamp(5),
    "issued_at": timestamp(0),
    "kid": match.like(EXAMPLE_JWK.kid),
    "token": match.like(EXAMPLE_TOKEN),
    "qr_payload": match.like(f"relay-pass:{EXAMPLE_TOKEN}"),
    "revoked": match.boolean(False),
}


def gatepass_interactions(pact: Pact) -> None:
    (
        pact.upon_receiving("the gateway asks for a driver's gate passes")
        .given(states.PASS_ISSUED)
        .with_request("GET", "/gatepass")
        .with_header("x-relay-identity", identity_matcher("gatepass"))
        .will_respond_with(200)
        .with_body({"items": match.each_like(GATE_PASS)}, content_type=JSON)
    )
    jwk = {name: match.like(value) for name, value in EXAMPLE_JWK.model_dump().items()}
    jwk |= {"kty": "EC", "crv": "P-256", "alg": "ES256"}  # what a gate verifies with
    (
        pact.upon_receiving("the gateway asks for the gate pass public keys")
        .given(states.KEYS_PUBLISHED)
        .with_request("GET", "/gatepass/keys")
        .will_respond_with(200)
        .with_body({"keys": match.each_like(jwk)}, content_type=JSON)
    )
    (
        pact.upon_receiving("a gate has a revoked pass verified through the gateway")
        .given(states.PASS_REVOKED)
        .with_request("POST", "/gatepass/verify")
        .with_header("x-relay-identity", identity_matcher("gatepass", Role.GATE, None))
        .with_body(
            {
                "token": match.like(EXAMPLE_TOKEN, generator=generate.provider_state("${token}")),
                "facility_id": states.ROUTE[0],
            },
            content_type=JSON,
        )
        .will_respond_with(200)
        .with_body(
            {
                "valid": False,
                "reason": "revoked",
                "pass_id": match.like(REVOKED_PASS_ID),
                "valid_until": timestamp(5),
            },
            content_type=JSON,
        )
    )


# --- navigate --------------------------------------------------------------------------------

YARD = {"lat": "41.9", "lon": "-87.6"}  # where the driver asks from (near F-CHI)


def navigate_interactions(pact: Pact) -> None:
    (
        pact.upon_receiving("the gateway asks for directions to a driver's next stop")
        .given(states.DRIVING_TO_PICKUP)
        .with_request("GET", "/navigate")
        .with_query_parameters({"load_id": states.LOAD, **YARD})
        .with_header("x-relay-identity", identity_matcher("navigate"))
        .will_respond_with(200)
        .with_body(
            {
                "destination": {
                    "facility_id": match.like(states.ROUTE[0]),
                    "entry_instructions": match.like("Enter from gate 3; show pass at the shack."),
                    "dock_hours": {
                        "opens": match.regex("05:00", regex=r"^\d{2}:\d{2}$"),
                        "closes": match.regex("22:00", regex=r"^\d{2}:\d{2}$"),
                        "days": match.like("Mon-Sat"),
                    },
                }
            },
            content_type=JSON,
        )
    )
