"""The gateway's edge on the real local stack: TLS policy, trailing slashes and module
redirects, request-header limits, slow clients, token claim shapes, client addresses for
anonymous rate limits, and revocations remembered for offline gate pass verification.

Every request goes to 127.0.0.1, bounded in count and in time (socket timeouts).
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from relay.stack import HOST, LocalStack, free_port
from shared_contracts.identity import Role

# The stack of this file: short read timeouts so that slow clients are answered within a
# test's patience, and a slow anonymous refill so that a burst is a burst.
HEADER_TIMEOUT_SECONDS = 1
GATEWAY_OVERRIDES = {
    "RELAY_HEADER_READ_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    "RELAY_BODY_READ_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS),
    "RELAY_RATE_LIMIT_ANONYMOUS": "0.1/10",
}
SOCKET_TIMEOUT_SECONDS = 5.0  # > the read timeouts above; what "never answered" means here
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        gateway_overrides=GATEWAY_OVERRIDES,
    ) as s:
        yield s


# --- TLS (first: its own stack is up and gone before this file's main stack starts) ----


@pytest.fixture
def tls_stack(tmp_path) -> Iterator[LocalStack]:
    with LocalStack(gateway_port=free_port(), state_dir=tmp_path, seed=False, tls=True) as s:
        yield s


def _handshake(
    stack: LocalStack, *, ciphers: str | None = None, version: ssl.TLSVersion | None = None
) -> tuple[str, str]:
    """(cipher, protocol) the gateway agreed to with a client offering only these."""
    ctx = ssl.create_default_context(cafile=str(stack.processes["gateway"].ca_file))
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    port = urlsplit(stack.gateway_url).port
    with (
        socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_SECONDS) as raw,
        ctx.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        cipher, protocol, _ = tls.cipher()
        return cipher, protocol


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_agrees_only_to_aead_suites_over_tls_1_2_or_1_3(tls_stack):
    tls12 = ssl.TLSVersion.TLSv1_2
    for cbc in ("ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA"):
        with pytest.raises(ssl.SSLError):
            _handshake(tls_stack, ciphers=cbc, version=tls12)
    for aead in (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ):
        assert _handshake(tls_stack, ciphers=aead, version=tls12) == (aead, "TLSv1.2")
    assert _handshake(tls_stack)[1] == "TLSv1.3"
    with pytest.raises(ssl.SSLError):  # below the minimum (the client allows it here)
        _handshake(tls_stack, ciphers="DEFAULT:@SECLEVEL=0", version=ssl.TLSVersion.TLSv1_1)
    # and the app answers over it
    ca = ssl.create_default_context(cafile=str(tls_stack.processes["gateway"].ca_file))
    assert httpx.get(tls_stack.gateway_url + "/healthz", verify=ca, timeout=5).status_code == 200


# --- trailing slashes and module redirects (review item 10) ---------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/loads/",
        "/gatepass/",
        "/gatepass/keys/",
        "/message/",
        "/navigate/?load_id=L-5001&lat=41.88&lon=-87.63",
        "/loads/L-5001/",
    ],
)
def test_a_trailing_slash_is_the_route_itself_never_a_module_redirect(api, stack, path):
    headers = {} if path.startswith("/gatepass/keys") else api.auth(Role.DRIVER, "D-1001")
    slashed = api.http.get(path, headers=headers)
    plain = api.http.get(path.replace("/?", "?").rstrip("/"), headers=headers)
    assert slashed.status_code == plain.status_code == 200, slashed.text
    assert "location" not in slashed.headers

    def same(body: dict) -> dict:  # directions carry an ETA computed per request
        return {k: v for k, v in body.items() if k != "eta"}

    assert same(slashed.json()) == same(plain.json())
    for name in stack.processes:  # no module's address in anything the client sees
        if stack.processes[name].port:
            assert f":{stack.processes[name].port}" not in str(slashed.headers) + slashed.text


# --- request-header limits (review item 11) ------------------------------------------


def _assert_431(r: httpx.Response, case: str) -> None:
    assert r.status_code == 431, case
    assert r.headers["content-type"] == PROBLEM, case
    assert r.json()["type"] == "urn:relay:problem:request-header-fields-too-large", case


def test_oversized_and_too_many_request_headers_are_answered_431(api, stack):
    me = api.auth(Role.DRIVER, "D-1001")
    huge_token = api.tokens.mint("D-1001", Role.DRIVER, "D-1001", padding="x" * 1_300_000)
    cases = {
        "1 MiB header": {**me, "x-big": "a" * 2**20},
        "8 MiB header": {**me, "x-big": "a" * 8 * 2**20},
        "10,000 headers": {**me, **{f"x-h-{i}": "v" for i in range(10_000)}},
        # 95 + authorization + httpx's host, accept, accept-encoding, connection, user-agent
        "101 headers": {**me, **{f"x-h-{i}": "v" for i in range(95)}},
        "a 9 KiB header": {**me, "x-big": "a" * 9 * 1024},
        "18 KiB over 3 headers": {**me, **{f"x-h-{i}": "a" * 6 * 1024 for i in range(3)}},
        "a 1.3 MB validly signed token": {"authorization": f"Bearer {huge_token}"},
    }
    with httpx.Client(base_url=stack.gateway_url, timeout=SOCKET_TIMEOUT_SECONDS) as client:
        for case, headers in cases.items():
            _assert_431(client.get("/loads", headers=headers), case)
        # just inside every limit (100 headers, one of 7 KiB, ~13 KiB in all): answered
        inside = {**me, **{f"x-h-{i}": "v" * 50 for i in range(93)}, "x-big": "a" * 7 * 1024}
        r = client.get("/loads", headers=inside)
        assert r.status_code == 200, r.text
        assert {ld["driver_id"] for ld in r.json()["items"]} == {"D-1001"}


# --- slow clients (review item 12) -------------------------------------------------------


def _connect(stack: LocalStack) -> socket.socket:
    port = urlsplit(stack.gateway_url).port
    return socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT_SECONDS)


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the gateway sends until it closes; socket.timeout if it never does."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _responses(data: bytes) -> list[int]:
    """The status codes of the responses in ``data``, in order."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects, says nothing
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ",  # stops mid-headers
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"  # a whole request, then
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n",  # the next one stalls
    ],
    ids=["nothing", "half the headers", "keep-alive, next request's headers"],
)
def test_a_client_that_stalls_in_its_headers_gets_408_and_is_disconnected(stack, sent):
    with _connect(stack) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        data = _until_closed(sock)
    waited = time.monotonic() - started
    assert _responses(data)[-1] == 408 and PROBLEM.encode() in data
    assert _responses(data)[:-1] == ([200] if sent.count(b"GET") == 2 else [])
    assert HEADER_TIMEOUT_SECONDS * 0.5 <= waited < SOCKET_TIMEOUT_SECONDS


def test_a_client_that_stalls_in_its_body_gets_408_and_is_disconnected(api, stack):
    token = api.auth(Role.DRIVER, "D-1001")["authorization"]
    with _connect(stack) as sock:
        sock.sendall(
            b"POST /message HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Authorization: " + token.encode() + b"\r\nContent-Length: 100\r\n\r\n"
            b'{"body": "'
        )
        data = _until_closed(sock)
    assert _responses(data) == [408] and PROBLEM.encode() in data


def test_keep_alive_and_pipelined_requests_still_work(stack):
    with _connect(stack) as sock:
        for _ in range(2):  # two rounds on one connection, the second one pipelined
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n" * 2)
            data = b""
            while data.count(b'{"status":"ok"}') < 2:
                data += sock.recv(65536)
            assert _responses(data) == [200, 200]


# --- token claim shapes (review item 13) ------------------------------------------------


@pytest.mark.parametrize(("role", "path"), [(Role.DRIVER, "/loads"), (Role.OPS, "/ops/status")])
def test_a_validly_signed_token_with_a_list_audience_is_401(api, role, path):
    driver_id = "D-1001" if role is Role.DRIVER else None
    token = api.tokens.mint(
        driver_id or "ops-it", role, driver_id, aud=[api.tokens.client_id, "another-app"]
    )
    r = api.http.get(path, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401, r.text
    assert r.headers["content-type"] == PROBLEM


# --- revocations remembered for offline verification (review item 15) -----------------


def test_offline_verification_refuses_passes_revoked_while_gatepass_was_up(api, stack):
    driver, gate = api.auth(Role.DRIVER, "D-1001"), api.auth(Role.GATE, None)
    passes = [
        api.http.post(
            "/gatepass", json={"load_id": "L-5001", "facility_id": "F-CHI"}, headers=driver
        )
        for _ in range(2)
    ]
    assert [p.status_code for p in passes] == [201, 201]
    revoked, kept = (p.json() for p in passes)
    r = api.http.post(
        f"/gatepass/{revoked['pass_id']}/revoke", headers=api.auth(Role.DISPATCH, None)
    )
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert api.http.get("/gatepass/keys").status_code == 200  # the gateway keeps the keys

    stack.stop_process("gatepass")
    try:
        verdicts = {}
        for name, p in (("revoked", revoked), ("kept", kept)):
            v = api.http.post(
                "/gatepass/verify", headers=gate, json={"token": p["token"], "facility_id": "F-CHI"}
            )
            assert v.status_code == 200 and "relay-degraded" in v.headers, v.text
            verdicts[name] = v.json()
    finally:
        stack.start_process("gatepass")
    assert (verdicts["revoked"]["valid"], verdicts["revoked"]["reason"]) == (False, "revoked")
    assert (verdicts["kept"]["valid"], verdicts["kept"]["reason"]) == (True, "valid")
    # neither answer could consult the module's revocation list, and both say so
    assert verdicts["revoked"]["revocation_checked"] is False
    assert verdicts["kept"]["revocation_checked"] is False


# --- client addresses for anonymous limits (review item 14; last: it drains the bucket) --


def test_anonymous_rate_limits_ignore_client_supplied_x_forwarded_for(api):
    for _ in range(15):  # the burst is 10, refilled at 0.1 per second
        r = api.http.get("/gatepass/keys")
        if r.status_code == 429:
            break
    assert r.status_code == 429
    spoofed = [
        api.http.get(
            "/gatepass/keys",
            headers={"x-forwarded-for": f"203.0.113.{i}", "x-real-ip": f"198.51.100.{i}"},
        ).status_code
        for i in range(40)
    ]
    assert spoofed == [429] * 40
