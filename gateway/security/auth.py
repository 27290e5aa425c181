"""Caller authentication: a Cognito-style bearer JWT in, :class:`IdentityContext` out.

Tokens are RS256 JWTs as Amazon Cognito issues them: ``iss`` is the user pool, ``aud``
(ID tokens) or ``client_id`` (access tokens) is one of our app clients, ``token_use`` is
``id`` or ``access``, ``exp`` is enforced. The role comes from the ``cognito:groups``
claim (groups ``driver``, ``gate``, ``dispatch``, ``ops``); drivers carry their id in
``custom:driver_id``. Keys come from the pool's JWKS URL, cached, and fetched again when a
token names a key id not seen yet (key rotation) — at most once per
``min_refresh_seconds``, so forged key ids cannot make us hammer the issuer. One fetch at
a time: requests that need keys while a fetch is in flight (a cold process's first burst)
await that fetch, and only its end (keys or failure) starts the ``min_refresh_seconds``.

The gateway is the only place that looks at a caller's token; modules receive the signed
identity context the gateway derived from it, never the token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared_contracts.errors import ForbiddenError, UnauthorizedError
from shared_contracts.identity import IdentityContext, Role

GROUPS_CLAIM = "cognito:groups"
DRIVER_CLAIM = "custom:driver_id"
ROLE_PRECEDENCE = (Role.OPS, Role.DISPATCH, Role.GATE, Role.DRIVER)
DEFAULT_JWKS_TTL_SECONDS = 3600
DEFAULT_MIN_REFRESH_SECONDS = 30
DEFAULT_LEEWAY_SECONDS = 30
JWKS_FETCH_TIMEOUT_SECONDS = 3.0
DEFAULT_VERIFIED_CACHE = 50_000


# Bounds on what a claim may hold: far above what Cognito issues, far below abuse.
MAX_CLAIM_CHARS = 256
MAX_GROUPS = 100

ClaimText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CLAIM_CHARS)]
# A NumericDate (RFC 7519): a JSON number (strict: never a string or a boolean).
NumericDate = Annotated[float, Field(allow_inf_nan=False)]


class CognitoClaims(BaseModel):
    """The claims the gateway reads, with the types Cognito gives them. A signed token
    whose claims have other shapes (``aud`` a list, groups a string, ``exp`` a string...)
    is not one of our tokens: 401, like any other invalid token."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    sub: ClaimText
    iss: ClaimText
    token_use: ClaimText
    exp: NumericDate
    iat: NumericDate
    nbf: NumericDate | None = None
    aud: ClaimText | None = None  # ID tokens: our app client id
    client_id: ClaimText | None = None  # access tokens: our app client id
    groups: Annotated[list[ClaimText], Field(max_length=MAX_GROUPS)] | None = Field(
        default=None, alias=GROUPS_CLAIM
    )
    # Empty or missing on a driver account: 403 below, the account is not set up.
    driver_id: Annotated[str, StringConstraints(max_length=MAX_CLAIM_CHARS)] | None = Field(
        default=None, alias=DRIVER_CLAIM
    )


class Authenticator(Protocol):
    async def authenticate(self, authorization: str | None) -> IdentityContext: ...


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise UnauthorizedError("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("authorization must be 'Bearer <token>'")
    return token.strip()


class JwksKeySource:
    """Public keys by ``kid`` from a JWKS URL (``https://`` in AWS, ``file://`` locally)."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float = DEFAULT_JWKS_TTL_SECONDS,
        min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.ttl = ttl_seconds
        self.min_refresh = min_refresh_seconds
        self.clock = clock
        self.transport = transport
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._inflight: asyncio.Future[None] | None = None
        self.fetches = 0

    async def _fetch(self) -> dict[str, Any]:
        self.fetches += 1
        if self.url.startswith("file://"):
            path = Path(self.url.removeprefix("file://"))
            return json.loads(await asyncio.to_thread(path.read_text))
        async with httpx.AsyncClient(
            transport=self.transport, timeout=JWKS_FETCH_TIMEOUT_SECONDS
        ) as client:
            response = await client.get(self.url)
            response.raise_for_status()
            return response.json()

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(JWKS_FETCH_TIMEOUT_SECONDS):
                document = await self._fetch()
            keys = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") == "RSA" and jwk.get("kid"):
                    keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm="RS256").key
            self._keys = keys
        finally:
            # Only a fetch that has ended counts as "just fetched": set at its start, it
            # told the requests awaiting a cold fetch that there was nothing to wait for.
            self._fetched_at = self.clock()

    def _shared_refresh(self) -> asyncio.Future[None]:
        """The fetch in flight, or a new one: concurrent callers share one fetch."""
        inflight = self._inflight
        if inflight is None or inflight.get_loop() is not asyncio.get_running_loop():
            inflight = self._inflight = asyncio.ensure_future(self._refresh())
            inflight.add_done_callback(self._refresh_done)
        return inflight

    def _refresh_done(self, future: asyncio.Future[None]) -> None:
        if self._inflight is future:
            self._inflight = None
        if not future.cancelled():
            future.exception()  # retrieved here, so an unawaited failure is not logged

    async def key(self, kid: str) -> Any:
        now = self.clock()
        stale = self._fetched_at is None or now - self._fetched_at >= self.ttl
        unknown = kid not in self._keys and (
            self._fetched_at is None or now - self._fetched_at >= self.min_refresh
        )
        if self._inflight is not None:
            # A fetch is under way: a known key is used meanwhile, a missing one awaited.
            stale = unknown = kid not in self._keys
        if stale or unknown:
            try:
                # Shielded: a caller that goes away does not cancel the others' fetch.
                await asyncio.shield(self._shared_refresh())
            except (httpx.HTTPError, TimeoutError, OSError, ValueError, jwt.PyJWKError):
                if not self._keys:
                    raise UnauthorizedError("cannot verify tokens right now") from None
        if not self._keys:  # the last fetch failed and none is due yet
            raise UnauthorizedError("cannot verify tokens right now")
        if kid not in self._keys:
            raise UnauthorizedError("token signed by an unknown key")
        return self._keys[kid]


class JwtAuthenticator:
    def __init__(
        self,
        keys: JwksKeySource,
        *,
        issuer: str,
        client_ids: frozenset[str],
        token_uses: frozenset[str] = frozenset({"id", "access"}),
        leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
        wall_clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_VERIFIED_CACHE,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.client_ids = client_ids
        self.token_uses = token_uses
        self.leeway = leeway_seconds
        self.wall_clock = wall_clock
        self.cache_size = cache_size
        # A phone sends the same token for an hour: verify its signature once, then only
        # check that it has not expired. Bounded; the least recently used go first.
        self._verified: OrderedDict[str, tuple[IdentityContext, float]] = OrderedDict()

    async def authenticate(self, authorization: str | None) -> IdentityContext:
        token = bearer_token(authorization)
        hit = self._verified.get(token)
        if hit is not None:
            if hit[1] + self.leeway > self.wall_clock():
                self._verified.move_to_end(token)
                return hit[0]
            del self._verified[token]
            raise UnauthorizedError("token expired")
        identity, expires = await self._verify(token)
        self._verified[token] = (identity, expires)
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> tuple[IdentityContext, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise UnauthorizedError("invalid token") from None
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise UnauthorizedError("invalid token")
        key = await self.keys.key(header["kid"])
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"verify_aud": False, "require": ["exp", "iat", "iss", "sub", "token_use"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError("token expired") from None
        except jwt.InvalidTokenError:
            raise UnauthorizedError("invalid token") from None
        try:
            typed = CognitoClaims.model_validate(claims)
        except ValidationError:
            raise UnauthorizedError("invalid token claims") from None
        return self._identity(typed), float(typed.exp)

    def _identity(self, claims: CognitoClaims) -> IdentityContext:
        audience = claims.aud if claims.token_use == "id" else claims.client_id  # noqa: S105
        if claims.token_use not in self.token_uses or audience not in self.client_ids:
            raise UnauthorizedError("token not issued for this app")
        return identity_of(claims)


def identity_of(claims: CognitoClaims) -> IdentityContext:
    """The caller a verified token's claims name: the highest-ranking Relay group is the
    role (:data:`ROLE_PRECEDENCE`); a driver's account must carry its driver id."""
    groups = set(claims.groups or ())
    role = next((r for r in ROLE_PRECEDENCE if r.value in groups), None)
    if role is None:
        raise ForbiddenError("the account is in no Relay group")
    driver_id = claims.driver_id if role is Role.DRIVER else None
    if role is Role.DRIVER and not driver_id:
        raise ForbiddenError("driver account without a driver id")
    try:
        return IdentityContext(sub=claims.sub, role=role, driver_id=driver_id)
    except ValueError:
        raise UnauthorizedError("invalid token claims") from None


class NoAuthenticator:
    """Used when no issuer is configured: every protected route answers 401."""

    async def authenticate(self, authorization: str | None) -> IdentityContext:
        raise UnauthorizedError("this gateway has no token issuer configured")
