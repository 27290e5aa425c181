"""Gate pass tokens: compact JWS (ES256) signed by KMS, verified with PyJWT and the JWKS.

Why KMS: the private key never leaves it, so no Lambda, log or engineer can mint passes.
Why a JWS: gates verify passes offline with the public key from ``GET /gatepass/keys``
and any standard JWT library; nothing here is specific to Relay except the claims.

Signing does by hand only what KMS forces: the signing input goes to ``kms.sign`` and its
DER signature is converted to the raw ``r || s`` form JWS uses. Verification is PyJWT's.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from enum import StrEnum
from typing import Any

import boto3
import jwt
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import BaseModel, ConfigDict, ValidationError

from shared_contracts import DriverId, FacilityId, LoadId, PassId
from shared_contracts.gatepass import Jwk, Jwks

ISSUER = "relay-gatepass"
ALGORITHM = "ES256"
_COORDINATE_BYTES = 32  # P-256


class SigningUnavailableError(Exception):
    """KMS could not sign or hand out the public key (throttled, down, misconfigured)."""


class Reason(StrEnum):
    """Why a gate accepts or refuses a pass: the ``reason`` of a GatePassVerdict."""

    VALID = "valid"
    MALFORMED = "malformed"            # not a compact JWS with our claims
    UNKNOWN_KEY = "unknown_key"        # kid is not in the JWKS
    BAD_SIGNATURE = "bad_signature"    # tampered, or not signed by our key / algorithm
    NOT_YET_VALID = "not_yet_valid"    # before nbf (more than 2 h before the window)
    EXPIRED = "expired"                # at or after exp (more than 2 h after the window)
    WRONG_FACILITY = "wrong_facility"  # issued for another facility
    REVOKED = "revoked"                # dispatch or ops revoked it
    UNKNOWN_PASS = "unknown_pass"      # signed by us, but no such pass is on record


class PassRejected(Exception):
    """A refused pass. ``claims`` is set once the signature is known good (e.g. expired)."""

    def __init__(self, reason: Reason, detail: str, claims: "PassClaims | None" = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.claims = claims


class PassClaims(BaseModel):
    """The JWT claims of a pass. Times are seconds since the epoch (RFC 7519)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iss: str = ISSUER
    sub: DriverId
    jti: PassId
    load_id: LoadId
    facility_id: FacilityId
    iat: int
    nbf: int
    exp: int


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def jwk_of(public_key: ec.EllipticCurvePublicKey) -> Jwk:
    """The public JWK of a P-256 key; ``kid`` is its RFC 7638 thumbprint."""
    numbers = public_key.public_numbers()
    x = b64url(numbers.x.to_bytes(_COORDINATE_BYTES, "big"))
    y = b64url(numbers.y.to_bytes(_COORDINATE_BYTES, "big"))
    # RFC 7638: required members only, lexicographic order, no whitespace.
    thumbprint = hashlib.sha256(_json({"crv": "P-256", "kty": "EC", "x": x, "y": y})).digest()
    return Jwk(kty="EC", crv="P-256", x=x, y=y, kid=b64url(thumbprint), alg=ALGORITHM, use="sig")


class KmsSigner:
    """Signs pass claims with a KMS ECC_NIST_P256 key. boto3 is created on first use."""

    def __init__(self, key_id: str, *, kms: Any = None) -> None:
        self.key_id = key_id
        self._kms = kms
        self._jwk: Jwk | None = None

    @property
    def kms(self) -> Any:
        if self._kms is None:
            self._kms = boto3.client("kms")
        return self._kms

    def public_jwk(self) -> Jwk:
        """The key's public half, fetched once per process (it never changes for a key id)."""
        if self._jwk is None:
            try:
                der = self.kms.get_public_key(KeyId=self.key_id)["PublicKey"]
            except (BotoCoreError, ClientError) as exc:
                raise SigningUnavailableError("cannot read the signing public key") from exc
            key = load_der_public_key(der)
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise SigningUnavailableError("the signing key is not an ECC_NIST_P256 key")
            self._jwk = jwk_of(key)
        return self._jwk

    @property
    def kid(self) -> str:
        return self.public_jwk().kid

    def jwks(self) -> Jwks:
        return Jwks(keys=[self.public_jwk()])

    def sign(self, claims: PassClaims) -> str:
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(_json(header))}.{b64url(_json(claims.model_dump()))}"
        try:
            der = self.kms.sign(
                KeyId=self.key_id, Message=signing_input.encode("ascii"),
                MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256",
            )["Signature"]
        except (BotoCoreError, ClientError) as exc:
            raise SigningUnavailableError("KMS could not sign the pass") from exc
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{signing_input}.{b64url(raw)}"


def verify(token: str, jwks: Jwks, now: datetime) -> PassClaims:
    """Check ``token`` against ``jwks`` at time ``now``; raise :class:`PassRejected` if bad.

    This is what a gate does offline. Time is checked against ``now`` rather than the
    system clock, so the caller (and tests) decide what "now" is.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise PassRejected(Reason.MALFORMED, "not a compact JWS") from None
    jwk = next((k for k in jwks.keys if k.kid == header.get("kid")), None)
    if jwk is None:
        raise PassRejected(Reason.UNKNOWN_KEY, "signed with a key that is not published")
    try:
        payload = jwt.decode(
            token, jwt.PyJWK(jwk.model_dump(), ALGORITHM).key, algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["iss", "sub", "jti", "iat", "nbf", "exp"],
                     "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise PassRejected(Reason.BAD_SIGNATURE, "signature does not match") from None
    except jwt.InvalidTokenError as exc:
        raise PassRejected(Reason.MALFORMED, str(exc)) from None
    try:
        claims = PassClaims.model_validate(payload)
    except ValidationError:
        raise PassRejected(Reason.MALFORMED, "claims are not those of a gate pass") from None
    at = now.timestamp()
    if at < claims.nbf:
        raise PassRejected(Reason.NOT_YET_VALID, "the pass is not valid yet", claims)
    if at >= claims.exp:
        raise PassRejected(Reason.EXPIRED, "the pass has expired", claims)
    return claims
