"""The gateway's edge behind any server (ASGI, Mangum): header limits in the request
guard, trailing slashes and module redirects, client addresses for anonymous limits, and
revocations remembered for offline gate pass verification."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.app import build_fallbacks, create_app
from gateway.config import GatewaySettings
from gateway.edge.clientaddr import ClientAddress
from gateway.resilience.fallbacks import RevokedPasses
from gateway.routing.routes import RouteTable
from module_kit import http
from shared_contracts.identity import Role
from tests.fakes import NOW, WallClock
from tests.unit.gateway.conftest import ISSUER, UPSTREAMS

PROBLEM = "application/problem+json"
TOO_LARGE = "urn:relay:problem:request-header-fields-too-large"
EVENTS = Path(__file__).resolve().parents[3] / "events"


@pytest.fixture
def anyio_backend():
    return "asyncio"


# --- header limits in the request guard (no server in front) -----------------------------

HEADER_CASES = {
    "101 headers": {f"x-h-{i}": "v" for i in range(101)},
    "one header over 8 KiB": {"x-big": "a" * (8 * 1024)},
    "over 16 KiB in all": {f"x-h-{i}": "a" * 6000 for i in range(3)},
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_the_request_guard_answers_431_for_headers_over_a_limit(gateway, upstream, bearer, case):
    route = upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    r = gateway.get("/loads", headers={**bearer(), **HEADER_CASES[case]})
    assert r.status_code == 431, case
    assert r.headers["content-type"] == PROBLEM and r.json()["type"] == TOO_LARGE
    assert r.headers["x-request-id"] == r.json()["request_id"]
    assert not route.called


def test_headers_inside_the_limits_pass_and_limits_come_from_settings(settings, upstream, bearer):
    upstream.get("http://loads.test/loads").mock(return_value=httpx.Response(200, json={}))
    inside = {**bearer(), **{f"x-h-{i}": "v" * 50 for i in range(90)}, "x-big": "a" * 7000}
    routes = RouteTable.load(settings.routes_file, env=UPSTREAMS)
    with TestClient(create_app(settings, routes=routes)) as client:
        assert client.get("/loads", headers=inside).status_code == 200
    stricter = settings.model_copy(update={"max_header_field_bytes": 4096})
    with TestClient(create_app(stricter, routes=routes)) as client:
        assert client.get("/loads", headers=inside).status_code == 431


def test_modules_get_the_same_header_limits_from_the_shared_glue():
    app = http.install(FastAPI())

    @app.get("/ping")
    def ping() -> dict:
        return {"ok": True}

    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
        r = client.get("/ping", headers=HEADER_CASES["101 headers"])
        assert r.status_code == 431 and r.json()["type"] == TOO_LARGE


# --- trailing slashes and module redirects ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/loads/", "/loads"),
        ("/loads//", "/loads"),
        ("/loads/L-1/", "/loads/L-1"),
        ("/message/?limit=5", "/message"),
    ],
)
def test_a_trailing_slash_is_forwarded_without_it(gateway, upstream, bearer, path, upstream_path):
    module = "loads" if path.startswith("/loads") else "message"
    route = upstream.get(f"http://{module}.test{upstream_path}").mock(
        return_value=httpx.Response(200, json={"items": []})
    )
    r = gateway.get(path, headers=bearer(), follow_redirects=False)
    assert r.status_code == 200 and route.call_count == 1
    assert route.calls[0].request.url.path == upstream_path


@pytest.mark.parametrize(
    ("location", "forwarded"),
    [
        ("/loads/L-1", "/loads/L-1"),  # a path: as is
        ("http://127.0.0.1:9321/loads", "/loads"),  # a module's own address
        ("https://loads.internal.example/loads?cursor=abc", "/loads?cursor=abc"),
        ("//evil.example/phish", "/phish"),  # scheme-relative
        ("/\\evil.example", None),  # read as //evil.example
        ("loads", None),  # relative: not a path
        ("javascript:alert(1)", None),
    ],
)
def test_module_redirects_never_point_anywhere_but_a_path_on_the_gateway(
    gateway, upstream, bearer, location, forwarded
):
    upstream.get("http://loads.test/loads/L-1").mock(
        return_value=httpx.Response(307, headers={"location": location})
    )
    r = gateway.get("/loads/L-1", headers=bearer(), follow_redirects=False)
    assert r.status_code == 307
    assert r.headers.get("location") == forwarded


def test_the_gateways_own_routes_never_redirect_to_the_host_header(gateway, bearer):
    r = gateway.get(
        "/ops/status/",
        headers={**bearer(Role.OPS, None), "host": "evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 404 and "location" not in r.headers
    assert r.headers["content-type"] == PROBLEM


# --- client addresses for anonymous rate limits ----------------------------------------


def _scope(peer: str, *xff: str) -> dict:
    return {"client": (peer, 4321), "headers": [(b"x-forwarded-for", v.encode()) for v in xff]}


def test_x_forwarded_for_counts_only_from_trusted_proxies():
    nobody = ClientAddress("")
    assert nobody(_scope("127.0.0.1", "203.0.113.9")) == "127.0.0.1"
    ours = ClientAddress("10.0.0.0/8, 192.0.2.7")
    # from our proxy: the right-most hop that is not one of our proxies
    assert ours(_scope("10.1.1.1", "198.51.100.1, 203.0.113.9")) == "203.0.113.9"
    assert ours(_scope("10.1.1.1", "203.0.113.9, 10.2.2.2")) == "203.0.113.9"
    assert ours(_scope("192.0.2.7", "6.6.6.6", "203.0.113.9, 10.2.2.2")) == "203.0.113.9"
    assert ours(_scope("10.1.1.1")) == "10.1.1.1"  # no header: the peer
    assert ours(_scope("10.1.1.1", "10.3.3.3")) == "10.1.1.1"  # all ours: the peer
    # from anyone else the header is the client's own word, and ignored
    assert ours(_scope("203.0.113.50", "10.9.9.9, 198.51.100.1")) == "203.0.113.50"
    assert ClientAddress("")({"headers": []}) == "-"


def test_trusted_proxies_are_checked_at_start_up():
    with pytest.raises(ValidationError):
        GatewaySettings(trusted_proxies="10.0.0.0/8, proxy.internal")
    assert GatewaySettings(trusted_proxies="10.0.0.0/8,::1").trusted_proxies


@pytest.mark.anyio
@pytest.mark.parametrize(("trusted", "limited"), [("", True), ("10.0.0.0/8", False)])
async def test_anonymous_limits_key_on_the_resolved_client(settings, upstream, trusted, limited):
    s = settings.model_copy(update={"rate_limit_anonymous": "0.001/1", "trusted_proxies": trusted})
    upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": []})
    )
    app = create_app(s, routes=RouteTable.load(s.routes_file, env=UPSTREAMS))
    transport = httpx.ASGITransport(app=app, client=("10.0.0.5", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        first = await client.get("/gatepass/keys", headers={"x-forwarded-for": "203.0.113.1"})
        again = await client.get("/gatepass/keys", headers={"x-forwarded-for": "203.0.113.1"})
        other = await client.get("/gatepass/keys", headers={"x-forwarded-for": "203.0.113.2"})
    assert (first.status_code, again.status_code) == (200, 429)
    assert other.status_code == (429 if limited else 200)


def test_under_lambda_the_client_is_api_gateways_source_ip(settings, upstream):
    from mangum import Mangum

    s = settings.model_copy(update={"rate_limit_anonymous": "0.001/1"})
    upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": []})
    )
    handler = Mangum(
        create_app(s, routes=RouteTable.load(s.routes_file, env=UPSTREAMS)),
        lifespan="off",
        text_mime_types=http.LAMBDA_TEXT_MIME_TYPES,
    )
    template = json.loads((EVENTS / "gatepass" / "get-keys-without-identity.200.json").read_text())

    def call(source_ip: str, forwarded_for: str, **extra_headers: str) -> dict:
        event = json.loads(json.dumps(template))
        event["requestContext"]["http"]["sourceIp"] = source_ip
        event["headers"].update({"x-forwarded-for": forwarded_for, **extra_headers})
        return handler(event, None)

    assert call("198.51.100.7", "1.1.1.1")["statusCode"] == 200
    assert call("198.51.100.7", "2.2.2.2")["statusCode"] == 429  # same source, new header
    assert call("198.51.100.8", "2.2.2.2")["statusCode"] == 200  # another source
    # and the header limits hold there too
    too_many = call("198.51.100.9", "3.3.3.3", **{f"x-h-{i}": "v" for i in range(100)})
    assert too_many["statusCode"] == 431 and TOO_LARGE in too_many["body"]


# --- revocations remembered for offline verification -----------------------------------


class Passes:
    """An ES256 key as gatepass would publish it, and passes signed with it."""

    def __init__(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwk.update(kid="k1", alg="ES256", use="sig")
        self.until = NOW + timedelta(hours=2)

    def token(self, pass_id: str) -> str:
        import jwt

        return jwt.encode(
            {
                "iss": "relay-gatepass",
                "sub": "D-1001",
                "jti": pass_id,
                "load_id": "L-1",
                "facility_id": "F-CHI",
                "iat": int(NOW.timestamp()),
                "nbf": int(NOW.timestamp()),
                "exp": int(self.until.timestamp()),
            },
            self.key,
            algorithm="ES256",
            headers={"kid": "k1"},
        )

    def doc(self, pass_id: str, revoked: bool) -> dict:
        return {
            "pass_id": pass_id,
            "driver_id": "D-1001",
            "load_id": "L-1",
            "facility_id": "F-CHI",
            "valid_from": NOW.isoformat(),
            "valid_until": self.until.isoformat(),
            "issued_at": NOW.isoformat(),
            "kid": "k1",
            "token": self.token(pass_id),
            "qr_payload": "x",
            "revoked": revoked,
        }


def _auth(role: Role, driver: str | None = None) -> dict[str, str]:
    return {"authorization": "Bearer " + ISSUER.mint(driver or f"{role.value}-1", role, driver)}


@pytest.fixture
def offline(settings, upstream):
    wall = WallClock()
    app = create_app(
        settings,
        routes=RouteTable.load(settings.routes_file, env=UPSTREAMS),
        wall_clock=wall,
        fallbacks=build_fallbacks(settings, wall_clock=wall),
    )
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    passes = Passes()
    upstream.get("http://gatepass.test/gatepass/keys").mock(
        return_value=httpx.Response(200, json={"keys": [passes.jwk]})
    )
    return client, passes


async def _learn_revocation(how: str, client: httpx.AsyncClient, upstream, passes: Passes):
    """One live answer through the gateway that shows P-1 revoked."""
    if how == "revoke":
        upstream.post("http://gatepass.test/gatepass/P-1/revoke").mock(
            return_value=httpx.Response(200, json=passes.doc("P-1", True))
        )
        r = await client.post("/gatepass/P-1/revoke", headers=_auth(Role.DISPATCH))
    elif how == "served revoked":
        upstream.get("http://gatepass.test/gatepass").mock(
            return_value=httpx.Response(
                200, json={"items": [passes.doc("P-1", True), passes.doc("P-2", False)]}
            )
        )
        r = await client.get("/gatepass", headers=_auth(Role.DRIVER, "D-1001"))
    else:  # a live verdict
        verify = upstream.post("http://gatepass.test/gatepass/verify").mock(
            return_value=httpx.Response(
                200,
                json={
                    "valid": False,
                    "reason": "revoked",
                    "pass_id": "P-1",
                    "driver_id": "D-1001",
                    "load_id": "L-1",
                    "facility_id": "F-CHI",
                    "valid_until": passes.until.isoformat(),
                    "revocation_checked": True,
                },
            )
        )
        r = await client.post(
            "/gatepass/verify",
            headers=_auth(Role.GATE),
            json={"token": passes.token("P-1"), "facility_id": "F-CHI"},
        )
        verify.mock(side_effect=httpx.ConnectError("gatepass is down"))
    assert r.status_code == 200 and "relay-degraded" not in r.headers


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["revoke", "served revoked", "live verdict"])
async def test_offline_verification_refuses_passes_the_gateway_saw_revoked(offline, upstream, how):
    client, passes = offline
    assert (await client.get("/gatepass/keys")).status_code == 200  # live: keys kept
    await _learn_revocation(how, client, upstream, passes)
    upstream.post("http://gatepass.test/gatepass/verify").mock(
        side_effect=httpx.ConnectError("gatepass is down")
    )

    async def verify(pass_id: str) -> dict:
        r = await client.post(
            "/gatepass/verify",
            headers=_auth(Role.GATE),
            json={"token": passes.token(pass_id), "facility_id": "F-CHI"},
        )
        assert r.status_code == 200 and "fallback=static" in r.headers["relay-degraded"]
        return r.json()

    revoked, other = await verify("P-1"), await verify("P-2")
    assert (revoked["valid"], revoked["reason"], revoked["pass_id"]) == (False, "revoked", "P-1")
    assert (other["valid"], other["reason"]) == (True, "valid")
    assert revoked["revocation_checked"] is False and other["revocation_checked"] is False


@pytest.mark.anyio
async def test_a_drivers_cached_pass_is_not_served_once_seen_revoked(offline, upstream):
    client, passes = offline
    driver = _auth(Role.DRIVER, "D-1001")
    live = upstream.get("http://gatepass.test/gatepass/P-1").mock(
        return_value=httpx.Response(200, json=passes.doc("P-1", False))
    )
    assert (await client.get("/gatepass/P-1", headers=driver)).status_code == 200
    await _learn_revocation("revoke", client, upstream, passes)
    live.mock(side_effect=httpx.ConnectError("gatepass is down"))
    r = await client.get("/gatepass/P-1", headers=driver)
    assert r.status_code == 503 and r.headers["content-type"] == PROBLEM


def test_remembered_revocations_are_bounded_expired_ones_first():
    wall = WallClock()
    revoked = RevokedPasses(3, clock=wall)
    later, earlier = NOW + timedelta(hours=5), NOW - timedelta(minutes=1)
    revoked.add("P-old-but-valid", later.isoformat())
    revoked.add("P-expired", earlier.isoformat())
    revoked.add("P-2", later.isoformat())
    revoked.add("P-3", later.isoformat())
    assert "P-expired" not in revoked and "P-old-but-valid" in revoked and len(revoked) == 3
    revoked.add("P-4", later.isoformat())  # nothing expired left: the oldest goes
    assert "P-old-but-valid" not in revoked and {"P-2", "P-3", "P-4"} <= set(revoked._until)
    revoked.add(None)  # not a pass id: ignored
    assert len(revoked) == 3
