"""The gateway's keep-alive transport, against a scripted HTTP/1.1 server in the same process
(loopback sockets only): reuse, limits, timeouts and every way an upstream can misbehave."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import httpx
import pytest

from gateway.forwarding.transport import KeepAliveTransport
from relay.tls import self_signed_certificate
from tests.fakes import MonotonicClock

pytestmark = pytest.mark.anyio

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
Answer = Callable[[bytes, bytes], Awaitable[bytes | None]]  # (head, body) -> raw response


class ScriptedServer:
    """Reads requests one by one on each connection and answers with ``answer``;
    ``None`` from ``answer`` closes the connection without a reply."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                raw = await self.answer(head, body)
                if raw is None:
                    break
                writer.write(raw)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def ok(head: bytes, body: bytes) -> bytes:
    return OK


def request(
    url: str,
    method: str = "GET",
    *,
    content: bytes | None = None,
    read: float = 2.0,
    pool: float = 2.0,
) -> httpx.Request:
    return httpx.Request(
        method,
        url,
        content=content,
        headers={"accept": "application/json"},
        extensions={"timeout": {"connect": 1.0, "read": read, "write": 1.0, "pool": pool}},
    )


async def send(transport: KeepAliveTransport, req: httpx.Request) -> httpx.Response:
    response = await transport.handle_async_request(req)
    await response.aread()
    return response


async def test_answers_come_back_as_httpx_responses_over_one_kept_alive_connection():
    async with ScriptedServer(ok) as server:
        transport = KeepAliveTransport()
        # WHEN three requests are sent one after the other
        answers = [await send(transport, request(server.url + f"/loads/L-{i}")) for i in range(3)]
        # THEN each is a complete httpx response, and all went over a single connection
        assert [a.json() for a in answers] == [{"ok": True}] * 3
        assert answers[0].headers["content-type"] == "application/json"
        assert answers[0].http_version == "HTTP/1.1"
        assert server.connections == 1
        head, _ = server.requests[1]
        assert head.startswith(b"GET /loads/L-1 HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:" in head and b"\r\naccept: application/json" in head
        await transport.aclose()


async def test_request_body_is_sent_with_its_length():
    async with ScriptedServer(ok) as server:
        transport = KeepAliveTransport()
        await send(transport, request(server.url + "/message", "POST", content=b'{"text":"hi"}'))
        head, body = server.requests[0]
        assert body == b'{"text":"hi"}' and b"content-length: 13\r\n" in head.lower()
        await transport.aclose()


async def test_works_under_the_httpx_client_api_with_chunked_answers():
    async def chunked(head: bytes, body: bytes) -> bytes:
        return (
            b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
        )

    async with ScriptedServer(chunked) as server:
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
            r = await client.post(server.url + "/loads/L-1/events", json={"kind": "arrived"})
        assert (r.status_code, r.json()) == (201, {"a": 1})


async def test_connection_close_is_honoured_and_a_fresh_connection_used_next():
    async def close(head: bytes, body: bytes) -> bytes:
        return OK.replace(b"content-length", b"connection: close\r\ncontent-length")

    async with ScriptedServer(close) as server:
        transport = KeepAliveTransport()
        await send(transport, request(server.url))
        await send(transport, request(server.url))
        assert server.connections == 2
        await transport.aclose()


async def test_answer_to_head_ends_at_its_headers():
    async def head_answer(head: bytes, body: bytes) -> bytes:
        return b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n"  # no body follows a HEAD

    async with ScriptedServer(head_answer) as server:
        transport = KeepAliveTransport()
        r = await send(transport, request(server.url, "HEAD", read=1.0))
        assert r.status_code == 200 and r.content == b""
        await transport.aclose()


async def test_silent_upstream_is_a_read_timeout_and_its_connection_is_not_reused():
    async def silent(head: bytes, body: bytes) -> bytes:
        await asyncio.Event().wait()  # a black hole: never answers; the read timeout ends it
        return OK

    async with ScriptedServer(silent) as server:
        transport = KeepAliveTransport()
        with pytest.raises(httpx.ReadTimeout):
            await send(transport, request(server.url, read=0.05))
        pool = next(iter(transport._pools.values()))
        assert pool.total == 0 and not pool.idle
        await transport.aclose()


async def test_upstream_closing_without_answer_is_a_read_error():
    async def hang_up(head: bytes, body: bytes) -> None:
        return None

    async with ScriptedServer(hang_up) as server:
        transport = KeepAliveTransport()
        with pytest.raises(httpx.ReadError):
            await send(transport, request(server.url))
        await transport.aclose()


async def test_malformed_answer_is_a_protocol_error():
    async def garbage(head: bytes, body: bytes) -> bytes:
        return b"NOT HTTP AT ALL\r\n\r\n"

    async with ScriptedServer(garbage) as server:
        transport = KeepAliveTransport()
        with pytest.raises(httpx.RemoteProtocolError):
            await send(transport, request(server.url))
        await transport.aclose()


async def test_nothing_listening_is_a_connect_error():
    server = await asyncio.start_server(ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await send(KeepAliveTransport(), request(f"http://127.0.0.1:{port}/"))


async def test_connection_cap_queues_callers_and_times_them_out():
    holding, release = asyncio.Event(), asyncio.Event()

    async def slow(head: bytes, body: bytes) -> bytes:
        holding.set()
        await release.wait()
        return OK

    async with ScriptedServer(slow) as server:
        transport = KeepAliveTransport(limits=httpx.Limits(max_connections=1))
        # GIVEN one request holds the only connection
        first = asyncio.create_task(send(transport, request(server.url)))
        await holding.wait()  # the upstream has it: its connection is taken
        # THEN a second caller gets PoolTimeout when no connection frees up in time
        with pytest.raises(httpx.PoolTimeout):
            await send(transport, request(server.url, pool=0.05))
        # AND a third, queued while the first finishes, gets the same connection
        third = asyncio.create_task(send(transport, request(server.url)))
        release.set()
        assert (await first).status_code == 200 and (await third).status_code == 200
        assert server.connections == 1
        await transport.aclose()


async def test_idle_connections_expire_on_the_injected_clock():
    clock = MonotonicClock()
    async with ScriptedServer(ok) as server:
        transport = KeepAliveTransport(limits=httpx.Limits(keepalive_expiry=4.0), clock=clock)
        await send(transport, request(server.url))
        clock.advance(3.9)
        await send(transport, request(server.url))
        assert server.connections == 1
        clock.advance(4.0)  # idle past the expiry: the upstream may be closing it
        await send(transport, request(server.url))
        assert server.connections == 2
        await transport.aclose()


async def test_a_cancelled_exchange_never_leaves_its_connection_for_reuse():
    answered = asyncio.Event()

    async def late(head: bytes, body: bytes) -> bytes:
        await answered.wait()
        return OK

    async with ScriptedServer(late) as server:
        transport = KeepAliveTransport()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):  # the gateway's deadline, as in ModuleUpstream
                await send(transport, request(server.url))
        answered.set()  # the late answer must not be read as the next request's
        pool = next(iter(transport._pools.values()))
        assert pool.total == 0 and not pool.idle
        await transport.aclose()


async def test_https_upstreams_are_verified_and_kept_alive(tmp_path):
    # GIVEN a module behind TLS (function URLs are HTTPS in AWS)
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with ScriptedServer(ok, tls=server_tls) as server:
        # WHEN the transport trusts its certificate, requests go through on one connection
        trusted = KeepAliveTransport(ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            assert (await send(trusted, request(server.url))).json() == {"ok": True}
        assert server.connections == 1
        await trusted.aclose()
        # AND a transport that does not trust it refuses to talk
        with pytest.raises(httpx.ConnectError):
            await send(KeepAliveTransport(), request(server.url))
