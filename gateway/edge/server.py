"""The gateway as a long-running process, with the edge limits uvicorn does not have.

    python -m gateway.edge.server --host 127.0.0.1 --port 8000 [--ssl-certfile C --ssl-keyfile K]

uvicorn (httptools parser, uvloop) runs the app programmatically with:

- **request-header limits** while reading (:class:`EdgeProtocol`): more headers, a larger
  header or more header bytes than ``GatewaySettings`` allows is answered 431, and a
  request head that has not ended within its budget is refused as it arrives, so a huge
  header is never buffered whole. The ASGI request guard enforces the same limits behind
  any other server (Lambda via Mangum).
- **read timeouts**: a client that has not sent its whole request head within
  ``header_read_timeout_seconds`` (counted from the connection, or from the first byte of
  a later request on a kept-alive connection), or leaves ``body_read_timeout_seconds``
  between two pieces of its body, is answered 408 and disconnected. Idle kept-alive
  connections are still closed by uvicorn's keep-alive timeout.
- **no client-supplied addresses**: ``proxy_headers=False``; the gateway decides which
  X-Forwarded-For to believe itself (``trusted_proxies``, see :mod:`gateway.edge.clientaddr`).
- **TLS**: TLS 1.2 with ECDHE and AEAD suites only (AES-GCM, ChaCha20-Poly1305), or TLS 1.3.

Cost on the hot path: a few attribute updates per request (~0.6 us measured against
uvicorn's own protocol; a uvloop timer armed and cancelled costs ~0.7 us); a timer is
armed only when a read leaves a request head (or body) unfinished, plus one per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.config import (
    DEFAULT_BODY_READ_TIMEOUT_SECONDS,
    DEFAULT_HEADER_READ_TIMEOUT_SECONDS,
    GatewaySettings,
)
from module_kit.http import HeaderLimits, new_request_id
from shared_contracts import headers
from shared_contracts.errors import (
    ProblemError,
    RequestHeaderFieldsTooLargeError,
    RequestTimeoutError,
)

if TYPE_CHECKING:
    from gateway.edge.shedding import EarlyShed

# TLS 1.2: ECDHE key exchange (forward secrecy) with an AEAD cipher, nothing else (no CBC,
# no RSA key exchange). TLS 1.3's suites are all AEAD; OpenSSL configures them apart.
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"
TLS_MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# What may be buffered of a request head before its end is seen: the header limit plus
# each header's framing (": " and CRLF), and a request line of up to this many bytes.
MAX_REQUEST_LINE_BYTES = 8 * 1024
HEADER_FRAMING_BYTES = 4
# After refusing a request, what the client still sends is read and dropped for this long
# before the connection closes, so that it reads the answer rather than a reset.
LINGER_SECONDS = 2.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class _AnsweredCycle:
    """Stands for the request/response cycle of a request answered in the server: complete
    from the start, so uvicorn drops its body and starts the next request as usual."""

    response_complete = True
    response_started = True
    keep_alive = True
    disconnected = False


_ANSWERED = _AnsweredCycle()


# Header names that leave a request to the parser even while its route is shed: framing
# (chunked bodies, 100-continue), a request to close, a protocol switch. Lower case, each
# after the CRLF that starts its line.
_PARSER_ONLY = (b"\ntransfer-encoding:", b"\nconnection:", b"\nexpect:", b"\nupgrade:")
_CONTENT_LENGTH = b"\ncontent-length:"


def _early_shed_of(app: Any) -> EarlyShed | Literal[False]:
    """The app's :class:`EarlyShed` (the gateway's), or False for any other app."""
    return getattr(app, "early_shed", None) or False


class _Refused(Exception):
    """Raised inside a parser callback: stop parsing, the refusal is in ``_refusal``."""


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits and read timeouts.

    Class attributes hold the configuration (:func:`protocol_class` makes a subclass per
    settings); per-connection state starts from class defaults, so constructing a
    connection costs what uvicorn's own does.
    """

    limits: ClassVar[HeaderLimits] = HeaderLimits()
    header_timeout: ClassVar[float] = DEFAULT_HEADER_READ_TIMEOUT_SECONDS
    body_timeout: ClassVar[float] = DEFAULT_BODY_READ_TIMEOUT_SECONDS
    head_budget: ClassVar[int] = (
        HeaderLimits().max_bytes
        + MAX_REQUEST_LINE_BYTES
        + HeaderLimits().max_count * HEADER_FRAMING_BYTES
    )
    linger_seconds: ClassVar[float] = LINGER_SECONDS
    # limits' fields, read once per request head
    _max_count: ClassVar[int] = HeaderLimits().max_count
    _max_field: ClassVar[int] = HeaderLimits().max_field_bytes

    _timer: asyncio.TimerHandle | None = None
    _in_head = False  # a request head has begun and not ended
    _in_body = False  # a request head has ended, its body has not
    _head_raw = 0  # bytes read since the last head ended (while not in a body)
    _body_at = 0.0  # loop time of the last body read, while a body timer runs
    _refusal: ProblemError | None = None
    _refused = False  # answered with an error: read and drop until closed
    # the app's early shedding (None: not looked up yet; False: the app has none)
    _early_shed: EarlyShed | Literal[False] | None = None
    _shed_asked = False  # this request was let in before the parser saw it

    # --- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._timer = self.loop.call_later(self.header_timeout, self._expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        early = self._early_shed
        if early and not self._in_head and not self._in_body:  # a request begins here
            if not early.active():
                self._shed_asked = True  # nothing is shed: on_headers_complete need not ask
            elif self._shed_whole(early, data):
                return
        if not self._in_body:
            self._head_raw += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self.send_400_response(msg)
            return
        if self._in_head:
            if self._head_raw > self.head_budget:
                self._refuse(
                    RequestHeaderFieldsTooLargeError(
                        f"request headers are limited to {self.limits.max_bytes} bytes in all"
                    )
                )
            elif self._timer is None:
                self._timer = self.loop.call_later(self.header_timeout, self._expired)
        elif self._in_body and self._timer is None:
            self._body_at = self.loop.time()
            self._timer = self.loop.call_later(self.body_timeout, self._expired)

    # --- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._in_head = True

    # on_header is uvicorn's own: counting there costs ~0.15 us per header. The head
    # budget above bounds what is buffered; the exact limits are checked once, here.

    def on_headers_complete(self) -> None:
        # Every byte of this head was read since the last one ended (``_head_raw``; a
        # head pipelined behind a body in the same read is the exception, and the ASGI
        # guard checks it): if those are within the per-header limit, so is every header
        # and all of them together, and the exact check is not needed.
        if self._head_raw > self._max_field or len(self.headers) > self._max_count:
            self._refusal = self.limits.check(self.headers)
            if self._refusal is not None:
                raise _Refused
        self._in_head = False
        self._in_body = True
        self._head_raw = 0
        if self._timer is not None:
            self._cancel_timer()
        early = self._early_shed
        if early is None:
            early = self._early_shed = _early_shed_of(self.app)
        if self._shed_asked:  # let in as its read arrived (ShedLoad still decides)
            self._shed_asked = False
        elif early is not False and (self.cycle is None or self.cycle.response_complete):
            answer = early.answer(self.url)
            if answer is not None:
                parser = self.parser
                keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
                self._answered_early(answer, keep_alive)
                return
        HttpToolsProtocol.on_headers_complete(self)

    def _shed_whole(self, early: EarlyShed, data: bytes) -> bool:
        """While a tier is shed: a read that is exactly one whole HTTP/1.1 request (its
        head, and a body of its ``Content-Length``) to a route being shed is answered here,
        without the parser, and True returned. Parsing the head (the parser's callbacks,
        uvicorn's scope) was most of what a shed request cost, and while a tier is shed
        most requests are. Anything else goes to the parser as before, returning False: a
        partial or pipelined read, a chunked body or ``Expect``, ``Connection`` or
        ``Upgrade``, an answer still being written on this connection, a request let in."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False
        line_end = data.find(b"\r\n")
        head_end = data.find(b"\r\n\r\n")
        if line_end <= 0 or head_end < line_end or head_end > self.head_budget:
            return False
        method, _, rest = data[:line_end].partition(b" ")
        target, _, version = rest.partition(b" ")
        if version != b"HTTP/1.1" or not method.isalpha() or target[:1] != b"/":
            return False
        head = data[line_end : head_end + 2].lower()
        if any(name in head for name in _PARSER_ONLY):
            return False
        length = 0
        at = head.find(_CONTENT_LENGTH)
        if at != -1:
            start = at + len(_CONTENT_LENGTH)
            value = head[start : head.find(b"\r\n", start)].strip()
            if not value.isdigit() or head.find(_CONTENT_LENGTH, start) != -1:
                return False  # malformed, or given twice: the parser decides
            length = int(value)
        if len(data) != head_end + 4 + length:
            return False
        answer = early.answer(target)
        if answer is None:
            self._shed_asked = True  # on_headers_complete need not ask again
            return False
        self._unset_keepalive_if_required()  # as before feeding the parser
        self._answered_early(answer, keep_alive=True)  # HTTP/1.1 without Connection
        return True

    def _answered_early(self, answer: bytes, keep_alive: bool) -> None:
        """The request was shed here (:class:`gateway.edge.shedding.EarlyShed`): its answer
        is written now; its body, if any, is read and dropped (the answered cycle below);
        the connection stays open for the next request unless the client closes it."""
        self.cycle = _ANSWERED  # type: ignore[assignment]
        if keep_alive:
            self.transport.write(answer)
            self.on_response_complete()
        else:
            head, _, body = answer.partition(b"\r\n\r\n")
            self.transport.write(head + b"\r\nconnection: close\r\n\r\n" + body)
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        if self._timer is not None:
            self._body_at = self.loop.time()
        HttpToolsProtocol.on_body(self, body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._timer is not None:
            self._cancel_timer()
        HttpToolsProtocol.on_message_complete(self)

    # --- timeouts and refusals ----------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_body:
            idle = self.loop.time() - self._body_at
            if idle < self.body_timeout:  # the body moved on since the timer was armed
                self._timer = self.loop.call_later(self.body_timeout - idle, self._expired)
                return
            self._refuse(
                RequestTimeoutError(
                    f"no part of the request body arrived for {self.body_timeout:g} s"
                )
            )
        else:
            self._refuse(
                RequestTimeoutError(
                    f"the request headers did not arrive within {self.header_timeout:g} s"
                )
            )

    def _refuse(self, error: ProblemError) -> None:
        """Answer ``error`` if nothing is being answered on this connection, then close."""
        self._refused = True
        self._cancel_timer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and not self._in_body:
            # A pipelined request went wrong while the one before it is being answered:
            # finish that answer, then close.
            cycle.keep_alive = False
            return
        if cycle is not None and self._in_body:
            if cycle.response_started:
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() says so; its sends are dropped
            cycle.message_event.set()
        self.transport.write(self._problem(error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._timer = self.loop.call_later(self.linger_seconds, self.transport.close)

    def _problem(self, error: ProblemError) -> bytes:
        rid = new_request_id()
        body = error.to_problem(rid).model_dump_json(exclude_none=True).encode()
        out = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            out += [name, b": ", value, b"\r\n"]
        out += [
            b"content-type: ",
            headers.PROBLEM_MEDIA_TYPE.encode(),
            b"\r\n",
            b"content-length: ",
            str(len(body)).encode(),
            b"\r\n",
            headers.REQUEST_ID.encode(),
            b": ",
            rid.encode(),
            b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
        return b"".join(out)


def protocol_class(settings: GatewaySettings) -> type[EdgeProtocol]:
    """:class:`EdgeProtocol` configured from ``settings``."""
    limits = settings.header_limits
    return type(
        "GatewayHttpProtocol",
        (EdgeProtocol,),
        {
            "limits": limits,
            "_max_count": limits.max_count,
            "_max_field": min(limits.max_field_bytes, limits.max_bytes),
            "header_timeout": settings.header_read_timeout_seconds,
            "body_timeout": settings.body_read_timeout_seconds,
            "head_budget": limits.max_bytes
            + MAX_REQUEST_LINE_BYTES
            + limits.max_count * HEADER_FRAMING_BYTES,
        },
    )


def harden_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """TLS 1.2+ only, ECDHE + AEAD suites, no compression or renegotiation."""
    context.minimum_version = TLS_MINIMUM_VERSION
    context.set_ciphers(TLS_CIPHERS)
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    )
    return context


def server_config(
    settings: GatewaySettings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
    log_level: str = "warning",
    access_log: bool = False,
    app_factory: Callable[[], Any] | None = None,
) -> uvicorn.Config:
    """The uvicorn configuration the gateway runs with (``app_factory``: tests pass their own
    app; by default :func:`gateway.app.create_app` with ``settings``)."""
    if app_factory is None:
        from gateway.app import create_app

        def app_factory() -> Any:
            return create_app(settings)

    tls: dict[str, Any] = {}
    if ssl_certfile:
        tls = {
            "ssl_certfile": ssl_certfile,
            "ssl_keyfile": ssl_keyfile,
            "ssl_ciphers": TLS_CIPHERS,
            "ssl_context_factory": lambda _config, default: harden_tls(default()),
        }
    return uvicorn.Config(
        app=app_factory,
        factory=True,
        host=host,
        port=port,
        http=protocol_class(settings),
        proxy_headers=False,
        server_header=False,  # the software the gateway runs is nobody's business
        log_level=log_level,
        access_log=access_log,
        **tls,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.edge.server",
        description="Serve the Relay gateway (settings: RELAY_*).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ssl-certfile", help="PEM certificate: serve HTTPS")
    parser.add_argument("--ssl-keyfile", help="PEM private key of the certificate")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
    )
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        parser.error("--ssl-certfile and --ssl-keyfile go together")
    uvicorn.Server(
        server_config(
            GatewaySettings(),
            host=args.host,
            port=args.port,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            log_level=args.log_level,
            access_log=args.access_log,
        )
    ).run()


if __name__ == "__main__":
    main()
