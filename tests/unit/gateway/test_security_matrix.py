"""Caller authentication: each way a token can be wrong, refused with 401, nothing forwarded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from gateway.security.auth import JwksKeySource
from relay.devissuer import DevIssuer
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
