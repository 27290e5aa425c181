"""Caller authentication: each way a token can be wrong, refused with 401, nothing forwarded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from gateway.security import auth as auth_module
from gateway.security.auth import (
    DEFAULT_JWKS_TTL_SECONDS,
    JwksKeySource,
    JwtAuthenticator,
)
from relay.devissuer import DevIssuer
from shared_contracts.errors import UnauthorizedError
from shared_contracts.identity import Role
from tests.fakes import MonotonicClock


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _tamper(token: str, **claims: object) -> str:
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=="))
    body.update(claims)
    return ".".join([header, _b64(body), signature])


OTHER_ISSUER = DevIssuer.generate()


def _hs256_with(issuer: DevIssuer, claims: dict) -> str:
    """The algorithm-confusion attack: HMAC keyed with the (public) RSA key."""
    from cryptography.hazmat.primitives import serialization

    secret = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _b64({"alg": "HS256", "typ": "JWT", "kid": issuer.kid}) + "." + _b64(claims)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def bad_tokens(issuer: DevIssuer) -> dict[str, str]:
    good = issuer.mint("D-1001", Role.DRIVER, "D-1001")
    claims = jwt.decode(good, options={"verify_signature": False})
    return {
        "alg none": ".".join(
            [_b64({"alg": "none", "typ": "JWT", "kid": issuer.kid}), _b64(claims), ""]
        ),
        "HS256 signed with the public key": _hs256_with(issuer, claims),
        "expired": issuer.mint(
            "D-1001", Role.DRIVER, "D-1001", now=(datetime.now(UTC) - timedelta(days=1)).timestamp()
        ),
        "wrong issuer": issuer.mint("D-1001", Role.DRIVER, "D-1001", iss="https://evil.example"),
        "wrong audience": issuer.mint("D-1001", Role.DRIVER, "D-1001", aud="another-app"),
        "wrong token_use": issuer.mint("D-1001", Role.DRIVER, "D-1001", token_use="refresh"),
        "wrong key, our kid": jwt.encode(
            claims, OTHER_ISSUER.key, algorithm="RS256", headers={"kid": issuer.kid}
        ),
        "unknown kid": OTHER_ISSUER.mint("D-1001", Role.DRIVER, "D-1001"),
        "tampered driver id": _tamper(good, **{"custom:driver_id": "D-1002"}),
        "tampered groups": _tamper(good, **{"cognito:groups": ["ops"]}),
        "not a JWT": "definitely-not-a-token",
    }


@pytest.mark.parametrize("case", list(bad_tokens(DevIssuer.generate())))
def test_bad_tokens_are_refused_and_nothing_is_forwarded(gateway, upstream, tokens, case):
    upstream.get("http://loads.test/loads").mock(
        return_value=httpx.Response(200, json={"items": [{"load_id": "L-SECRET"}]})
    )
    token = bad_tokens(tokens)[case]
    r = gateway.get("/loads", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401, case
    assert r.headers["content-type"] == "application/problem+json"
    assert "L-SECRET" not in r.text and not upstream.calls


def test_access_tokens_with_our_client_id_are_accepted(gateway, upstream, tokens):
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    token = tokens.mint("D-1001", Role.DRIVER, "D-1001", token_use="access")
    assert gateway.get("/loads", headers={"authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"cognito:groups": []}, 403),  # signed in, but no Relay role
        ({"custom:driver_id": None, "cognito:groups": ["driver"]}, 403),
    ],
)
def test_accounts_without_a_role_or_driver_id_are_refused(
    gateway, upstream, tokens, claims, status
):
    token = tokens.mint("D-1001", Role.DRIVER, "D-1001", **claims)
    r = gateway.get("/loads", headers={"authorization": f"Bearer {token}"})
    assert r.status_code == status and not upstream.calls


# --- key rotation at the issuer --------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_jwks_is_cached_and_refetched_for_a_new_key_at_most_every_30_s(anyio_backend):
    old, new = DevIssuer.generate(), DevIssuer.generate()
    published = {"keys": [old.jwk]}
    fetches = []

    def serve(request: httpx.Request) -> httpx.Response:
        fetches.append(request.url)
        return httpx.Response(200, json=published)

    clock = MonotonicClock(start=0.0)
    source = JwksKeySource(
        "https://issuer.test/jwks.json", clock=clock, transport=httpx.MockTransport(serve)
    )
    await source.key(old.kid)
    await source.key(old.kid)
    assert len(fetches) == 1  # cached
    published["keys"].append(new.jwk)  # the issuer rotates
    clock.now += 31
    assert await source.key(new.kid) is not None
    assert len(fetches) == 2  # an unseen kid: fetched again
    for _ in range(5):  # forged kids cannot make us hammer it
        with pytest.raises(Exception, match="unknown key"):
            await source.key("forged")
    assert len(fetches) == 2


class HeldJwks:
    """A JWKS endpoint whose answers wait until the test releases them (an asyncio.Event)."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.fetches = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        self.started.set()
        await self.release.wait()
        return self.answer


def _authenticator(issuer: DevIssuer, jwks: HeldJwks, clock: MonotonicClock) -> JwtAuthenticator:
    source = JwksKeySource(
        "https://issuer.test/jwks.json", clock=clock, transport=httpx.MockTransport(jwks)
    )
    return JwtAuthenticator(source, issuer=issuer.issuer, client_ids=frozenset({issuer.client_id}))


COLD_BURST = 20


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cold_burst_waits_for_the_one_jwks_fetch_in_flight(anyio_backend):
    # A gateway process restarted under load: its first requests all arrive while the
    # first JWKS fetch is still out. They wait for that fetch; none is refused, one fetch.
    issuer = DevIssuer.generate()
    jwks = HeldJwks(httpx.Response(200, json=issuer.jwks()))
    auth = _authenticator(issuer, jwks, MonotonicClock(start=0.0))
    tokens = [issuer.mint(f"D-{n}", Role.DRIVER, f"D-{n}") for n in range(COLD_BURST)]
    burst = [asyncio.ensure_future(auth.authenticate(f"Bearer {token}")) for token in tokens]
    await jwks.started.wait()
    await asyncio.sleep(0)  # let every request reach the key source
    assert not any(request.done() for request in burst)  # all waiting, none refused
    jwks.release.set()
    identities = await asyncio.gather(*burst)
    assert [identity.sub for identity in identities] == [f"D-{n}" for n in range(COLD_BURST)]
    assert jwks.fetches == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_failed_cold_fetch_refuses_its_waiters_without_a_storm_of_fetches(
    anyio_backend,
):
    issuer = DevIssuer.generate()
    jwks = HeldJwks(httpx.Response(503))
    clock = MonotonicClock(start=0.0)
    auth = _authenticator(issuer, jwks, clock)
    token = issuer.mint("D-1", Role.DRIVER, "D-1")
    burst = [asyncio.ensure_future(auth.authenticate(f"Bearer {token}")) for _ in range(10)]
    await jwks.started.wait()
    clock.advance(20)  # the issuer is slow to answer
    jwks.release.set()
    outcomes = await asyncio.gather(*burst, return_exceptions=True)
    assert all(isinstance(o, UnauthorizedError) for o in outcomes), outcomes
    assert {str(o) for o in outcomes} == {"cannot verify tokens right now"}
    assert jwks.fetches == 1
    # The 30 s before another fetch count from the failure's end, not the fetch's start.
    clock.advance(15)  # 35 s after the fetch began, 15 s after it failed
    for _ in range(5):  # the reason stays the real one: nothing to verify with
        with pytest.raises(UnauthorizedError, match="cannot verify tokens right now"):
            await auth.authenticate(f"Bearer {token}")
    assert jwks.fetches == 1
    jwks.answer = httpx.Response(200, json=issuer.jwks())
    clock.advance(15)
    assert (await auth.authenticate(f"Bearer {token}")).sub == "D-1"
    assert jwks.fetches == 2


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hung_jwks_fetch_ends_at_its_deadline(anyio_backend, monkeypatch):
    monkeypatch.setattr(auth_module, "JWKS_FETCH_TIMEOUT_SECONDS", 0.01)
    issuer = DevIssuer.generate()
    jwks = HeldJwks(httpx.Response(200, json=issuer.jwks()))  # never released
    auth = _authenticator(issuer, jwks, MonotonicClock(start=0.0))
    token = issuer.mint("D-1", Role.DRIVER, "D-1")
    async with asyncio.timeout(5):  # a guard: without a deadline the fetch would hang
        outcomes = await asyncio.gather(
            *(auth.authenticate(f"Bearer {token}") for _ in range(5)), return_exceptions=True
        )
    assert {str(o) for o in outcomes} == {"cannot verify tokens right now"}
    assert jwks.fetches == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_known_keys_serve_during_a_refresh_and_a_leaving_caller_keeps_it_going(
    anyio_backend,
):
    issuer = DevIssuer.generate()
    jwks = HeldJwks(httpx.Response(200, json=issuer.jwks()))
    jwks.release.set()
    clock = MonotonicClock(start=0.0)
    auth = _authenticator(issuer, jwks, clock)
    source = auth.keys
    await source.key(issuer.kid)
    jwks.release.clear()
    jwks.started.clear()
    clock.advance(DEFAULT_JWKS_TTL_SECONDS)  # the cache is due a refresh
    refreshing = asyncio.ensure_future(source.key(issuer.kid))
    await jwks.started.wait()
    # Meanwhile, requests whose key is cached do not wait for the refresh.
    assert not refreshing.done()
    assert await source.key(issuer.kid) is not None
    fetch = source._inflight
    assert fetch is not None
    refreshing.cancel()  # the caller that started it goes away: the refresh carries on
    with pytest.raises(asyncio.CancelledError):
        await refreshing
    jwks.release.set()
    await fetch
    assert jwks.fetches == 2 and source._fetched_at == DEFAULT_JWKS_TTL_SECONDS


# --- rate limits -----------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(settings, upstream, bearer):
    from fastapi.testclient import TestClient

    from gateway.app import create_app
    from gateway.routing.routes import RouteTable
    from tests.unit.gateway.conftest import UPSTREAMS

    strict = settings.model_copy(update={"rate_limit_driver": "1/3", "rate_limit_ops": "1/1"})
    clock = MonotonicClock(start=0.0)
    app = create_app(strict, routes=RouteTable.load(strict.routes_file, env=UPSTREAMS), clock=clock)
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    with TestClient(app) as client:
        codes = [client.get("/loads", headers=bearer()).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/loads", headers=bearer())
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["type"] == "urn:relay:problem:rate-limited"
        # another driver has their own bucket; time refills it
        assert client.get("/loads", headers=bearer(Role.DRIVER, "D-2")).status_code == 200
        clock.now += 1
        assert client.get("/loads", headers=bearer()).status_code == 200
        # operators are held to a stricter limit
        ops = bearer(Role.OPS, None)
        assert [client.get("/ops/status", headers=ops).status_code for _ in range(2)] == [200, 429]
