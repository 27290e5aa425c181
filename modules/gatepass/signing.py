"""Gate pass tokens: compact JWS (ES256) signed by KMS, verified with PyJWT and the JWKS.

Why KMS: the private key never leaves it, so no Lambda, log or engineer can mint passes.
Why a JWS: gates verify passes offline with the public key from ``GET /gatepass/keys``
and any standard JWT library; nothing here is specific to Relay except the claims.

Signing does by hand only what KMS forces: the signing input goes to ``kms.sign`` and its
DER signature is converted to the raw ``r || s`` form JWS uses. Verification is PyJWT's.

Key rotation
------------
One key signs new passes: the current key, ``GATEPASS_SIGNING_KEY_ID`` (the template's
``SigningKey``). Retired keys, ``GATEPASS_RETIRED_KEY_IDS`` (template parameter
``RetiredSigningKeyIds``: comma-separated KMS key ids or ARNs, in the stack's account and
region), sign nothing but stay in the JWKS after the current key, so a pass keeps verifying
after the key that signed it is rotated out. A token is checked with the key its ``kid``
(the key's RFC 7638 thumbprint) names; a kid that is no longer published is ``unknown_key``.

1. Note the current key's ARN: the stack output ``SigningKeyArn``.
2. In ``template.yaml`` give the ``SigningKey`` resource a new logical id (``SigningKey2``,
   ...) and update its references (the env var, the ``kms:Sign`` statement, the output).
   The key is ``DeletionPolicy: Retain``: the deploy creates a new key and keeps the old.
3. Deploy with the gatepass stack parameter ``RetiredSigningKeyIds=<old ARN>``
   (comma-separated if an older key is still listed). New passes carry the new kid;
   passes already issued keep verifying.
4. Keep the old key listed until the last pass it signed has expired. A pass expires 2 h
   after its stop's appointment window closes: within about 26 h for a pass issued on the
   day of the visit, later for one issued ahead for a later window. The gate pass table
   tells: the latest ``valid_until`` of the passes whose ``kid`` is the old key's.
5. Deploy without it, then disable the old key or schedule its deletion in KMS. A pass it
   signed that is still shown is refused with ``unknown_key``.

Gates cache the JWKS (``Cache-Control: max-age``) and must refetch it when they meet a kid
they do not know, as PyJWT's ``PyJWKClient`` does. During the rotation deploy's canary the
previous version does not know the new key yet, so rotate off-peak: a pass the new version
signs and the old version verifies online in those minutes is ``unknown_key``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

import jwt
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pydantic import BaseModel, ConfigDict, ValidationError

from module_kit import aws
from shared_contracts import DriverId, FacilityId, LoadId, PassId
from shared_contracts.gatepass import Jwk, Jwks

ISSUER = "relay-gatepass"
ALGORITHM = "ES256"
_COORDINATE_BYTES = 32  # P-256
# KMS answers that do not go away by retrying: the key id is wrong, the key is disabled or
# pending deletion, or this function may not read it. Anything else (throttling, KMS down)
# is worth a retry.
_KEY_UNUSABLE = frozenset(
    {
        "NotFoundException",
        "DisabledException",
        "KMSInvalidStateException",
        "AccessDeniedException",
        "InvalidArnException",
        "UnsupportedOperationException",
    }
)

log = logging.getLogger("relay.gatepass")


class SigningUnavailableError(Exception):
    """KMS could not sign or hand out the public key (throttled, down, misconfigured)."""


class UnusableKeyError(SigningUnavailableError):
    """The key cannot serve as a pass key at all: unknown, disabled, not ours to read,
    or not an ECC_NIST_P256 signing key. Retrying will not help; configuration will."""


class Reason(StrEnum):
    """Why a gate accepts or refuses a pass: the ``reason`` of a GatePassVerdict."""

    VALID = "valid"
    MALFORMED = "malformed"  # not a compact JWS with our claims
    UNKNOWN_KEY = "unknown_key"  # kid not in the JWKS: never ours, or retired and dropped
    BAD_SIGNATURE = "bad_signature"  # tampered, or not signed by our key / algorithm
    NOT_YET_VALID = "not_yet_valid"  # before nbf (more than 2 h before the window)
    EXPIRED = "expired"  # at or after exp (more than 2 h after the window)
    WRONG_FACILITY = "wrong_facility"  # issued for another facility
    REVOKED = "revoked"  # dispatch or ops revoked it
    UNKNOWN_PASS = "unknown_pass"  # noqa: S105 - a verdict, not a password;  # signed by us, but no such pass is on record


class PassRejected(Exception):
    """A refused pass. ``claims`` is set once the signature is known good (e.g. expired)."""

    def __init__(self, reason: Reason, detail: str, claims: PassClaims | None = None) -> None:
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
    """Signs pass claims with the current KMS key; publishes the current and retired keys.

    boto3 is created on first use. Each key's public half is fetched once per process: it
    never changes for a key id, and the configuration only changes with a deployment.
    """

    def __init__(
        self, key_id: str, *, retired_key_ids: Iterable[str] = (), kms: Any = None
    ) -> None:
        self.key_id = key_id
        self.retired_key_ids = tuple(retired_key_ids)
        self._kms = kms
        self._public: dict[str, Jwk] = {}  # key id -> its public JWK
        self._unusable: set[str] = set()  # retired key ids KMS refused for good

    @property
    def kms(self) -> Any:
        if self._kms is None:
            self._kms = aws.client("kms")
        return self._kms

    def public_jwk(self) -> Jwk:
        """The current key's public JWK. If it cannot be read, nothing can be signed."""
        return self._public_jwk_of(self.key_id)

    @property
    def kid(self) -> str:
        return self.public_jwk().kid

    def jwks(self) -> Jwks:
        """The current key first, then the retired ones (each once, by kid).

        A retired key KMS refuses for good (deleted, disabled, not readable) is left out and
        logged once: its passes answer ``unknown_key``, as after its removal, instead of
        every verification failing over a key on its way out.
        """
        keys = [self.public_jwk()]
        for key_id in self.retired_key_ids:
            jwk = self._retired_jwk(key_id)
            if jwk is not None and all(k.kid != jwk.kid for k in keys):
                keys.append(jwk)
        return Jwks(keys=keys)

    def sign(self, claims: PassClaims) -> str:
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(_json(header))}.{b64url(_json(claims.model_dump()))}"
        try:
            der = self.kms.sign(
                KeyId=self.key_id,
                Message=signing_input.encode("ascii"),
                MessageType="RAW",
                SigningAlgorithm="ECDSA_SHA_256",
            )["Signature"]
        except (BotoCoreError, ClientError) as exc:
            raise SigningUnavailableError("KMS could not sign the pass") from exc
        r, s = decode_dss_signature(der)
        raw = r.to_bytes(_COORDINATE_BYTES, "big") + s.to_bytes(_COORDINATE_BYTES, "big")
        return f"{signing_input}.{b64url(raw)}"

    def _retired_jwk(self, key_id: str) -> Jwk | None:
        if key_id in self._unusable:
            return None
        try:
            return self._public_jwk_of(key_id)
        except UnusableKeyError as exc:
            self._unusable.add(key_id)
            log.error("retired gate pass key left out of the JWKS: %s", exc)
            return None

    def _public_jwk_of(self, key_id: str) -> Jwk:
        if key_id not in self._public:
            self._public[key_id] = self._fetch_jwk(key_id)
        return self._public[key_id]

    def _fetch_jwk(self, key_id: str) -> Jwk:
        try:
            answer = self.kms.get_public_key(KeyId=key_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _KEY_UNUSABLE:
                raise UnusableKeyError(f"KMS key {key_id} cannot be used ({code})") from exc
            raise SigningUnavailableError(f"cannot read the public key of {key_id}") from exc
        except BotoCoreError as exc:
            raise SigningUnavailableError(f"cannot read the public key of {key_id}") from exc
        try:
            key = load_der_public_key(answer["PublicKey"])
        except ValueError:
            key = None
        if (
            answer.get("KeyUsage") != "SIGN_VERIFY"
            or not isinstance(key, ec.EllipticCurvePublicKey)
            or key.curve.name != "secp256r1"
        ):
            raise UnusableKeyError(f"KMS key {key_id} is not an ECC_NIST_P256 signing key")
        return jwk_of(key)


def verify(token: str, jwks: Jwks, now: datetime) -> PassClaims:
    """Check ``token`` against ``jwks`` at time ``now``; raise :class:`PassRejected` if bad.

    This is what a gate does offline. The key is the one the token's ``kid`` names, so a
    pass signed by a retired key still in ``jwks`` verifies. Time is checked against ``now``
    rather than the system clock, so the caller (and tests) decide what "now" is.
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
            token,
            jwt.PyJWK(jwk.model_dump(), ALGORITHM).key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={
                "require": ["iss", "sub", "jti", "iat", "nbf", "exp"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
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
