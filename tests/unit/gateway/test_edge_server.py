"""gateway.edge.server: header limits and read timeouts in the HTTP protocol, the TLS policy.

The protocol runs on a fake transport, with its timers on a clock the test moves (the ASGI
app still runs on the real event loop): no sockets, no sleeping.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from gateway.config import GatewaySettings
from gateway.edge.server import (
    LINGER_SECONDS,
    TLS_CIPHERS,
    harden_tls,
    protocol_class,
    server_config,
)

HEADER_TIMEOUT, BODY_TIMEOUT = 10.0, 5.0
SETTINGS = GatewaySettings(
    header_read_timeout_seconds=HEADER_TIMEOUT, body_read_timeout_seconds=BODY_TIMEOUT
)
GET = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


@pytest.fixture
def anyio_backend():
    return "asyncio"


class FakeTimer:
    def __init__(self, when: float, callback, args: tuple) -> None:
        self.when, self.target, self.args = when, callback, args
        self.cancelled = self.fired = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The protocol's clock and timers, moved by the test; tasks go to the real loop."""

    def __init__(self, real: asyncio.AbstractEventLoop) -> None:
        self.real, self.now, self.timers = real, 0.0, []

    def time(self) -> float:
        return self.now

    def call_later(self, delay, callback, *args):
        timer = FakeTimer(self.now + delay, callback, args)
        self.timers.append(timer)
        return timer

    def create_task(self, coro, **kwargs):
        return self.real.create_task(coro, **kwargs)

    def armed(self) -> list[FakeTimer]:
        return [t for t in self.timers if not (t.cancelled or t.fired)]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while due := [t for t in self.armed() if t.when <= self.now]:
            for timer in sorted(due, key=lambda t: t.when):
                timer.fired = True
                timer.target(*timer.args)


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.eof = self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "written after close"
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class App:
    """Reads the whole body, answers 200 with what it read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.disconnected = asyncio.Event()

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.calls.append((scope["path"], body))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body) + 2).encode())],
            }
        )
        await send({"type": "http.response.body", "body": b"ok" + body})


class Conn:
    def __init__(self, settings: GatewaySettings = SETTINGS) -> None:
        self.app = App()
        self.loop = FakeLoop(asyncio.get_running_loop())
        config = Config(
            app=self.app, http=protocol_class(settings), lifespan="off", access_log=False
        )
        config.load()
        self.transport = FakeTransport()
        self.proto = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=self.loop
        )
        self.proto.connection_made(self.transport)

    async def send(self, data: bytes) -> None:
        self.proto.data_received(data)
        for _ in range(10):  # let the app's task run
            await asyncio.sleep(0)

    def statuses(self) -> list[int]:
        return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", self.transport.out)]

    def problem(self) -> dict:
        out = bytes(self.transport.out)
        assert b"content-type: application/problem+json" in out
        assert b"x-request-id: " in out and b"connection: close" in out
        return json.loads(out[out.rindex(b"\r\n\r\n") + 4 :])

    def assert_lingers_then_closes(self) -> None:
        assert self.transport.eof and not self.transport.closed  # answer sent, reading on
        self.loop.advance(LINGER_SECONDS)
        assert self.transport.closed


# --- header limits -----------------------------------------------------------------------


def _head(*headers: tuple[str, str]) -> bytes:
    lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
    return f"GET /loads HTTP/1.1\r\nHost: gw\r\n{lines}\r\n".encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("case", "head"),
    [
        ("101 headers", _head(*[(f"x-h-{i}", "v") for i in range(100)])),
        ("one header of 8 KiB + 1", _head(("x-big", "a" * (8 * 1024 - 4)))),
        ("16 KiB + 1 over three headers", _head(*[(f"x-h-{i}", "a" * 5500) for i in range(3)])),
    ],
)
async def test_a_head_over_a_limit_is_answered_431_and_never_reaches_the_app(case, head):
    conn = Conn()
    await conn.send(head + GET)  # a pipelined request behind it is not served either
    assert conn.statuses() == [431], case
    assert conn.problem()["type"] == "urn:relay:problem:request-header-fields-too-large"
    assert conn.app.calls == []
    await conn.send(GET)  # whatever follows is dropped
    assert conn.statuses() == [431] and conn.app.calls == []
    conn.assert_lingers_then_closes()


@pytest.mark.anyio
async def test_a_huge_header_is_refused_while_it_arrives_not_once_it_is_buffered():
    conn = Conn()
    await conn.send(b"GET /loads HTTP/1.1\r\nHost: gw\r\nX-Big: ")
    sent = 0
    while not conn.statuses():
        await conn.send(b"a" * 4096)
        sent += 4096
        assert sent < 64 * 1024, "read on past the head budget"
    assert conn.statuses() == [431] and conn.app.calls == []
    assert sent <= 28 * 1024  # 16 KiB of headers + request line and framing budget


@pytest.mark.anyio
async def test_heads_inside_the_limits_are_served_on_a_kept_alive_connection():
    conn = Conn()
    inside = _head(*[(f"x-h-{i}", "v" * 50) for i in range(98)], ("x-big", "a" * 7000))
    await conn.send(inside)
    await conn.send(inside[:100])  # the next request arrives in pieces
    await conn.send(inside[100:])
    assert conn.statuses() == [200, 200] and len(conn.app.calls) == 2
    assert not conn.transport.closed


# --- read timeouts -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_connection_that_sends_nothing_gets_408_after_the_header_timeout():
    conn = Conn()
    conn.loop.advance(HEADER_TIMEOUT - 0.01)
    assert conn.statuses() == []
    conn.loop.advance(0.01)
    assert conn.statuses() == [408]
    assert conn.problem()["type"] == "urn:relay:problem:request-timeout"
    conn.assert_lingers_then_closes()


@pytest.mark.anyio
async def test_a_stalled_head_on_a_kept_alive_connection_gets_408_counted_from_its_first_byte():
    conn = Conn()
    await conn.send(GET)
    conn.loop.advance(4)  # idle, inside uvicorn's keep-alive timeout (5 s)
    await conn.send(b"GET /healthz HTTP/1.1\r\nHo")
    conn.loop.advance(HEADER_TIMEOUT - 0.01)
    await conn.send(b"st: gw\r\n")  # still trickling in: the deadline holds
    assert conn.statuses() == [200]
    conn.loop.advance(0.01)
    assert conn.statuses() == [200, 408] and len(conn.app.calls) == 1


@pytest.mark.anyio
async def test_whole_requests_arm_no_timer_on_the_hot_path():
    conn = Conn()
    await conn.send(GET)
    await conn.send(_post(2) + b"ab")
    ours = [t for t in conn.loop.timers if t.target == conn.proto._expired]
    assert len(ours) == 1 and ours[0].cancelled  # the connection's, until its first head
    for _ in range(20):
        await conn.send(GET)
        await conn.send(_post(2) + b"ab")
    assert [t for t in conn.loop.timers if t.target == conn.proto._expired] == ours
    assert conn.statuses() == [200] * 42


def _post(length: int) -> bytes:
    return (
        f"POST /message HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.anyio
async def test_a_body_that_stops_arriving_gets_408_and_the_app_sees_a_disconnect():
    conn = Conn()
    await conn.send(_post(10) + b"12345")
    conn.loop.advance(BODY_TIMEOUT - 1)
    await conn.send(b"67")  # progress: the wait starts again
    conn.loop.advance(BODY_TIMEOUT - 0.01)
    assert conn.statuses() == []
    conn.loop.advance(0.01)
    assert conn.statuses() == [408]
    assert "request body" in conn.problem()["detail"]
    await asyncio.wait_for(conn.app.disconnected.wait(), 1)
    assert conn.app.calls == []
    conn.assert_lingers_then_closes()


@pytest.mark.anyio
async def test_a_body_sent_in_time_is_served_and_no_timeout_follows():
    conn = Conn()
    await conn.send(_post(4) + b"ab")
    conn.loop.advance(BODY_TIMEOUT - 1)
    await conn.send(b"cd")
    assert conn.statuses() == [200] and conn.app.calls == [("/message", b"abcd")]
    conn.loop.advance(BODY_TIMEOUT * 2)
    assert conn.statuses() == [200]


# --- TLS and the server configuration ---------------------------------------------------


def test_tls_context_offers_tls_1_2_aead_suites_and_tls_1_3_only():
    ctx = harden_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    suites = ctx.get_ciphers()
    tls12 = [c for c in suites if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12)
    assert all(c["aead"] for c in suites)
    assert not any("CBC" in c["description"] for c in suites)


def test_the_server_runs_without_proxy_headers_and_with_the_edge_protocol(tmp_path):
    from relay.tls import self_signed_certificate

    cert, key = self_signed_certificate(tmp_path)
    config = server_config(
        SETTINGS, port=0, ssl_certfile=str(cert), ssl_keyfile=str(key), app_factory=lambda: App()
    )
    config.load()
    assert config.proxy_headers is False
    assert config.server_header is False  # no "server: uvicorn" on any answer
    assert config.http_protocol_class.header_timeout == HEADER_TIMEOUT
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl_ciphers == TLS_CIPHERS
    assert all(c["aead"] for c in config.ssl.get_ciphers())


# --- shedding in the server ----------------------------------------------------------------


class EarlyShedApp(App):
    """The app, with the early shedding the gateway's app offers: /message is shed."""

    def __init__(self) -> None:
        super().__init__()
        self.early_shed = self
        self.asked: list[bytes] = []
        self.shedding = True

    def active(self) -> bool:
        return self.shedding

    def answer(self, target: bytes) -> bytes | None:
        self.asked.append(target)
        if not target.startswith(b"/message"):
            return None
        body = b'{"status":503}'
        return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )


class CountingParser:
    """The connection's parser, counting the reads it is fed."""

    def __init__(self, parser) -> None:
        self.parser, self.fed = parser, 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self.parser, name)


class EarlyConn(Conn):
    def __init__(self) -> None:
        super().__init__()
        self.app = EarlyShedApp()
        self.proto.app = self.app
        self.parser = self.proto.parser = CountingParser(self.proto.parser)


@pytest.mark.anyio
async def test_a_request_shed_in_the_server_never_reaches_the_app_and_the_connection_goes_on():
    conn = EarlyConn()
    await conn.send(b"GET /message?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert conn.statuses() == [503] and conn.app.calls == [] and not conn.transport.closed
    # a shed write's body is read and dropped; the next request is the app's
    await conn.send(b"POST /message HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
    await conn.send(GET)
    assert conn.statuses() == [503, 503, 200]
    assert conn.app.calls == [("/healthz", b"")]
    assert conn.app.asked == [b"/message?x=1", b"/message", b"/healthz"]


@pytest.mark.anyio
async def test_a_shed_request_that_asks_to_close_gets_its_answer_then_the_close():
    conn = EarlyConn()
    await conn.send(b"GET /message HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    assert conn.statuses() == [503] and conn.transport.closed
    assert b"connection: close\r\n" in bytes(conn.transport.out)


@pytest.mark.anyio
async def test_an_app_without_early_shedding_is_served_as_before():
    conn = Conn()
    await conn.send(b"GET /message HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert conn.statuses() == [200] and conn.app.calls == [("/message", b"")]


SHED_POST = b"POST /message HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"


@pytest.mark.anyio
async def test_a_whole_request_to_a_shed_route_is_answered_without_the_parser():
    conn = EarlyConn()
    await conn.send(GET)  # a connection's first request is parsed (it finds the app's shedding)
    fed = conn.parser.fed
    # WHEN whole requests to a shed route arrive, one per read
    await conn.send(SHED_POST)
    await conn.send(b"GET /message?x=1 HTTP/1.1\r\nHost: gw\r\n\r\n")
    # THEN each is answered 503 without being parsed, and the connection goes on
    assert conn.parser.fed == fed
    assert conn.statuses() == [200, 503, 503] and not conn.transport.closed
    # AND a request let in is parsed and served, asked about once
    await conn.send(GET)
    assert conn.statuses() == [200, 503, 503, 200] and conn.parser.fed == fed + 1
    assert conn.app.asked == [b"/healthz", b"/message", b"/message?x=1", b"/healthz"]
    assert conn.app.calls == [("/healthz", b""), ("/healthz", b"")]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "case",
    ["split over two reads", "pipelined", "chunked", "length given twice", "asks to close"],
)
async def test_a_read_that_is_not_one_whole_plain_request_is_left_to_the_parser(case: str):
    conn = EarlyConn()
    await conn.send(GET)
    fed = conn.parser.fed
    if case == "split over two reads":
        await conn.send(SHED_POST[:-2])
        await conn.send(SHED_POST[-2:])
    elif case == "pipelined":
        await conn.send(SHED_POST + GET)
    elif case == "chunked":
        await conn.send(
            b"POST /message HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
    elif case == "length given twice":
        await conn.send(
            b"POST /message HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n"
            b"Content-Length: 5\r\n\r\nhello"
        )
    else:
        await conn.send(b"GET /message HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    # THEN the parser read it, and the request to the shed route was still shed
    assert conn.parser.fed > fed
    assert conn.statuses()[1] in (503, 400)
    if case in ("split over two reads", "chunked"):
        await conn.send(GET)  # its body read to the end: the next request is the app's
        assert conn.statuses() == [200, 503, 200]
    if case == "pipelined":
        assert conn.statuses() == [200, 503, 200]


@pytest.mark.anyio
async def test_while_nothing_is_shed_every_request_is_parsed_and_let_in_without_asking():
    conn = EarlyConn()
    conn.app.shedding = False
    await conn.send(GET)  # the first finds the app's shedding
    fed = conn.parser.fed
    await conn.send(SHED_POST)
    assert conn.parser.fed == fed + 1
    assert conn.statuses() == [200, 200]  # the pipeline's ShedLoad decides, as for any request
    assert conn.app.asked == [b"/healthz"] and conn.app.calls[-1] == ("/message", b"hello")
