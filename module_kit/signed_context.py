"""Signing and verifying the identity context the gateway passes to modules.

The gateway authenticates the caller's token and forwards who they are in the
``x-relay-identity`` header: a short-lived EdDSA (Ed25519) JWT signed with the gateway's
key, addressed (``aud``) to the one module it is sent to. Modules verify it with the
gateway's public key and refuse requests without a valid one, so a module called directly,
or with a forged or replayed context, answers 401. Clients cannot set this header: the
gateway drops every client-supplied ``x-relay-*`` header.

The context itself (:class:`~shared_contracts.identity.IdentityContext`) is a contract.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared_contracts.identity import IdentityContext, InvalidIdentityError

ISSUER = "relay-gateway"
DEFAULT_TTL_SECONDS = 60
PUBLIC_KEY_VARIABLE = "RELAY_IDENTITY_PUBLIC_KEY"
_SIGNED_CACHE_SIZE = 10_000


def generate_key_pair() -> tuple[str, str]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class IdentitySigner:
    """Gateway side. Tokens are reused for half their life, so signing is rare per caller."""

    def __init__(
        self,
        private_key_pem: str,
        *,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the identity signing key must be Ed25519")
        self._key = key
        self.ttl = ttl_seconds
        self.clock = clock
        self._cache: OrderedDict[tuple, tuple[str, float]] = OrderedDict()

    def sign(
        self,
        identity: IdentityContext,
        audience: str,
        cells: tuple[tuple[str, str], ...] | None = None,
    ) -> str:
        """``identity`` signed for ``audience``; ``cells`` (the driver's cell per celled
        module, as ``(module, cell)`` pairs) instead of ``identity.cells`` when given."""
        now = self.clock()
        if cells is None:
            cells = tuple(sorted(identity.cells.items()))
        cache_key = (identity.sub, identity.role, identity.driver_id, cells, audience)
        hit = self._cache.get(cache_key)
        if hit and hit[1] - now > self.ttl / 2:
            return hit[0]
        claims = {
            "iss": ISSUER,
            "aud": audience,
            "iat": int(now),
            "exp": int(now) + self.ttl,
            **identity.model_dump(exclude_none=True, exclude={"cells"}),
            # (no "cells" claim on an uncelled stage or for staff: an empty map says nothing)
            **({"cells": dict(cells)} if cells else {}),
        }
        token = jwt.encode(claims, self._key, algorithm="EdDSA")
        self._cache[cache_key] = (token, now + self.ttl)
        if len(self._cache) > _SIGNED_CACHE_SIZE:
            self._cache.popitem(last=False)
        return token


class IdentityVerifier:
    """Module side: accepts only contexts the gateway signed for this module, still fresh."""

    def __init__(self, public_keys_pem: str, audience: str, *, leeway_seconds: int = 5) -> None:
        blocks = [b for b in public_keys_pem.split("-----END PUBLIC KEY-----") if b.strip()]
        self._keys = []
        for block in blocks:
            key = serialization.load_pem_public_key((block + "-----END PUBLIC KEY-----").encode())
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("identity public keys must be Ed25519")
            self._keys.append(key)
        if not self._keys:
            raise ValueError("no identity public key configured")
        self.audience = audience
        self.leeway = leeway_seconds

    @classmethod
    def from_env(cls, audience: str) -> IdentityVerifier:
        """Several keys (one PEM block each) may be listed while the gateway's key rotates."""
        pem = os.environ.get(PUBLIC_KEY_VARIABLE, "")
        if not pem.strip():
            raise InvalidIdentityError(
                f"{PUBLIC_KEY_VARIABLE} is not set: no caller can be trusted"
            )
        return cls(pem, audience)

    def verify(self, token: str) -> IdentityContext:
        for key in self._keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=["EdDSA"],
                    audience=self.audience,
                    issuer=ISSUER,
                    leeway=self.leeway,
                    options={"require": ["exp", "iat", "aud", "iss", "sub"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                raise InvalidIdentityError(str(exc)) from None
            return IdentityContext(
                sub=claims["sub"],
                role=claims["role"],
                driver_id=claims.get("driver_id"),
                cells=claims.get("cells") or {},
            )
        raise InvalidIdentityError("identity context not signed by the gateway")
