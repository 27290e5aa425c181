"""A lean HTTP/1.1 keep-alive transport under httpx's API: asyncio protocols + httptools.

The gateway speaks httpx (``httpx.Request`` in, ``httpx.Response`` out, httpx's exception
tree), so tests swap in ``MockTransport``, ``ASGITransport`` or respx's mock. Under that API,
httpcore's pool scans every connection on every request and httpx-over-aiohttp spends most
of a forward in aiohttp's request machinery; this transport does one thing only, the thing a
gateway does all day: small request/response exchanges over a pool of keep-alive
connections to a handful of upstreams. Taking an idle connection is O(1); the response is
parsed by llhttp (httptools, as uvicorn uses for requests).

What it does not do, on purpose: HTTP/2, proxies, ``Expect: 100-continue``, streaming
response bodies (an answer is read whole; modules answer small JSON). Redirects, cookies
and auth are the client's business, not a transport's.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable

import httptools
import httpx

from gateway.config import (
    DEFAULT_KEEPALIVE_EXPIRY_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_KEEPALIVE,
)

DEFAULT_LIMITS = httpx.Limits(
    max_connections=DEFAULT_MAX_CONNECTIONS,
    max_keepalive_connections=DEFAULT_MAX_KEEPALIVE,
    keepalive_expiry=DEFAULT_KEEPALIVE_EXPIRY_SECONDS,
)
DEFAULT_TIMEOUT = httpx.Timeout(5.0)
_HTTP11 = {"http_version": b"HTTP/1.1"}
_DROPPED_REQUEST_HEADERS = frozenset({b"transfer-encoding", b"content-length", b"connection"})

Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[int, list, bytes, bool]] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._head_only = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(
            httpx.ReadError(
                "the server closed the connection before answering" if exc is None else str(exc)
            )
        )

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._head_only:  # no body follows an answer to HEAD, whatever it declares
            self._complete(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._head_only:
            self._complete(self.parser.should_keep_alive())

    # exchanges
    def _complete(self, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result((self.parser.get_status_code(), self._headers, body, keep_alive))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(
        self, payload: bytes, *, head: bool, timeout: float | None
    ) -> tuple[int, list, bytes, bool]:
        """Send one request, wait for its whole answer; ``TimeoutError`` after ``timeout``."""
        if self.transport is None or self._waiter is not None:
            raise RuntimeError("a connection carries one exchange at a time, while open")
        self._headers, self._body, self._head_only = [], [], head
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        # A timer handle rather than asyncio.timeout(): one object instead of a context
        # manager and a cancellation per exchange, on the hottest path of the gateway.
        timer = None if timeout is None else loop.call_later(timeout, self._timed_out, waiter)
        self.transport.write(payload)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()

    def _timed_out(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """Connections to one origin: LIFO idle stack, a cap on the total, FIFO waiters."""

    def __init__(
        self,
        origin: Origin,
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext | None,
        clock: Callable[[], float],
    ) -> None:
        self.scheme, host, self.port = origin
        self.host = host.decode("ascii")
        self.max_connections = limits.max_connections or 2**31
        self.max_idle = (
            self.max_connections
            if limits.max_keepalive_connections is None
            else limits.max_keepalive_connections
        )  # None: no cap, as in httpx
        self.expiry = limits.keepalive_expiry
        self.ssl = ssl_context if self.scheme == b"https" else None
        self.clock = clock
        self.idle: deque[_Connection] = deque()
        self.total = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(
        self, connect_timeout: float | None, pool_timeout: float | None
    ) -> _Connection:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed and (
                    self.expiry is None or self.clock() - conn.idle_since < self.expiry
                ):
                    return conn
                self._discard(conn)
            if self.total < self.max_connections:
                break
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout(pool_timeout):
                    await waiter
            except TimeoutError:
                raise httpx.PoolTimeout("no free connection to the upstream in time") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
        self.total += 1
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self.total -= 1
            self._wake()
            raise

    async def _connect(self, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    _Connection,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def release(self, conn: _Connection, reusable: bool) -> None:
        if reusable and not conn.closed and len(self.idle) < self.max_idle:
            conn.idle_since = self.clock()
            self.idle.append(conn)
        else:
            self._discard(conn)
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self.total -= 1

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        while self.idle:
            self._discard(self.idle.pop())


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncBaseTransport`` over pooled HTTP/1.1 keep-alive connections.

    Timeouts come from the request's ``timeout`` extension (as ``httpx.AsyncClient`` sets
    it): ``connect``, ``read`` (the wait for the whole answer) and ``pool``. Errors are
    httpx's: ``ConnectError``/``ConnectTimeout``, ``ReadTimeout``, ``ReadError``,
    ``RemoteProtocolError``, ``PoolTimeout``. A connection is reused only after a complete
    exchange that both sides agreed to keep alive.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits = DEFAULT_LIMITS,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.ssl_context = ssl_context
        self.clock = clock
        self._pools: dict[Origin, _Pool] = {}

    def _pool(self, url: httpx.URL) -> _Pool:
        origin = (
            url.raw_scheme,
            url.raw_host,
            url.port or (443 if url.raw_scheme == b"https" else 80),
        )
        pool = self._pools.get(origin)
        if pool is None:
            if origin[0] not in (b"http", b"https"):
                raise httpx.UnsupportedProtocol(f"unsupported scheme {origin[0]!r}")
            context = self.ssl_context
            if origin[0] == b"https" and context is None:
                context = self.ssl_context = ssl.create_default_context()
            pool = self._pools[origin] = _Pool(origin, self.limits, context, self.clock)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout") or DEFAULT_TIMEOUT.as_dict()
        payload = _serialize(request, await _body(request))
        pool = self._pool(request.url)
        conn = await pool.acquire(timeouts.get("connect"), timeouts.get("pool"))
        head = request.method == "HEAD"
        try:
            status, raw_headers, body, keep_alive = await conn.exchange(
                payload, head=head, timeout=timeouts.get("read")
            )
        except TimeoutError:
            pool.release(conn, reusable=False)
            raise httpx.ReadTimeout(
                "the upstream did not answer in time", request=request
            ) from None
        except BaseException:  # cancelled mid-exchange, reset, malformed: never reuse it
            pool.release(conn, reusable=False)
            raise
        pool.release(conn, reusable=keep_alive)
        return httpx.Response(
            status,
            headers=raw_headers,
            stream=httpx.ByteStream(body),
            extensions=_HTTP11,
            request=request,
        )

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


async def _body(request: httpx.Request) -> bytes:
    try:
        return request.content  # read already: bytes, JSON and form content
    except httpx.RequestNotRead:
        return b"".join([chunk async for chunk in request.stream])  # type: ignore[union-attr]


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    url = request.url
    lines = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if name.lower() not in _DROPPED_REQUEST_HEADERS:
            lines += (name, b": ", value, b"\r\n")
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines += (b"content-length: ", str(len(body)).encode("ascii"), b"\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
