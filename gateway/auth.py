"""Caller authentication: bearer token in, :class:`IdentityContext` out.

The gateway is the only place that looks at a caller's token. Modules receive the
identity context the gateway derived, never the token itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

import jwt

from shared_contracts.errors import UnauthorizedError
from shared_contracts.identity import IdentityContext, Role

ROLE_CLAIM = "relay:role"
DRIVER_CLAIM = "relay:driver_id"
DEFAULT_TOKEN_TTL = timedelta(hours=12)


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> IdentityContext: ...


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("authorization must be 'Bearer <token>'")
    return token.strip()


class DevTokenAuthenticator:
    """HS256 tokens minted by ``relay token`` for the local stack."""

    def __init__(self, secret: str, *, issuer: str, audience: str) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience

    def authenticate(self, authorization: str | None) -> IdentityContext:
        token = bearer_token(authorization)
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience=self.audience,
                issuer=self.issuer, options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
            return IdentityContext(sub=claims["sub"], role=Role(claims[ROLE_CLAIM]),
                                   driver_id=claims.get(DRIVER_CLAIM))
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("token expired") from None
        except (jwt.InvalidTokenError, KeyError, ValueError):
            raise UnauthorizedError("invalid token") from None

    def mint(self, sub: str, role: Role, driver_id: str | None = None,
             ttl: timedelta = DEFAULT_TOKEN_TTL, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {"sub": sub, "iss": self.issuer, "aud": self.audience,
                  "iat": now, "exp": now + ttl, ROLE_CLAIM: role.value}
        if driver_id:
            claims[DRIVER_CLAIM] = driver_id
        return jwt.encode(claims, self._secret, algorithm="HS256")


class NoAuthenticator:
    """Used when no token source is configured: every protected route answers 401."""

    def authenticate(self, authorization: str | None) -> IdentityContext:
        raise UnauthorizedError("this gateway has no token issuer configured")
