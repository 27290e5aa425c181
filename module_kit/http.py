"""FastAPI glue every service uses: the error envelope, request ids, identity.

``install(app)`` makes an app speak only ``application/problem+json`` for errors
(validation, malformed JSON, unknown routes, unexpected exceptions) and stamps every
response with the request id.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared_contracts import headers
from shared_contracts.errors import (
    BadRequestError,
    FieldError,
    ForbiddenError,
    PayloadTooLargeError,
    Problem,
    ProblemError,
    RequestHeaderFieldsTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from shared_contracts.identity import IdentityContext, InvalidIdentityError, Role

from . import logs, metrics
from .signed_context import IdentityVerifier

log = logging.getLogger("relay.http")

DEFAULT_MAX_BODY_BYTES = 64 * 1024
# Request headers: at most this many, this many bytes in one (name + value) and in all of
# them together (names + values). For scale: API Gateway allows 10 KB of headers, Envoy
# 60 KiB and 100 headers; a Cognito token is 1-2 KB.
DEFAULT_MAX_HEADER_COUNT = 100
DEFAULT_MAX_HEADER_FIELD_BYTES = 8 * 1024
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# Mangum base64-encodes bodies it does not know as text; problem+json is text.
LAMBDA_TEXT_MIME_TYPES = ["text/", "application/json", "application/problem+json"]
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Request ids need to be unique, not secret: a random per-process prefix and a counter
# cost a fraction of a uuid4, which reads the OS's random source on every request.
# Worker processes forked after import draw a prefix of their own.
_ids: dict[str, Any] = {"prefix": "", "counter": itertools.count()}


def _new_id_prefix() -> None:
    _ids["prefix"], _ids["counter"] = uuid.uuid4().hex[:16], itertools.count()


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"{_ids['prefix']}{next(_ids['counter']):016x}"


_BODY_METHODS = {b"POST", b"PUT", b"PATCH"}
_STATUS_ERRORS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
}


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_response(exc: ProblemError, request_id: str | None) -> JSONResponse:
    problem = exc.to_problem(request_id)
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        headers=exc.headers,
        media_type=headers.PROBLEM_MEDIA_TYPE,
    )


@dataclass(frozen=True, slots=True)
class HeaderLimits:
    """Request-header limits; a request over any of them is answered 431."""

    max_count: int = DEFAULT_MAX_HEADER_COUNT
    max_field_bytes: int = DEFAULT_MAX_HEADER_FIELD_BYTES
    max_bytes: int = DEFAULT_MAX_HEADER_BYTES

    def check(self, headers: list[tuple[bytes, bytes]]) -> ProblemError | None:
        """``headers`` as in an ASGI scope. A plain loop: ~0.5 us for a usual request."""
        if len(headers) > self.max_count:
            return RequestHeaderFieldsTooLargeError(
                f"at most {self.max_count} request headers are accepted"
            )
        total, field = 0, self.max_field_bytes
        for name, value in headers:
            size = len(name) + len(value)
            if size > field:
                return RequestHeaderFieldsTooLargeError(
                    f"a request header is limited to {field} bytes"
                )
            total += size
        if total > self.max_bytes:
            return RequestHeaderFieldsTooLargeError(
                f"request headers are limited to {self.max_bytes} bytes in all"
            )
        return None


DEFAULT_HEADER_LIMITS = HeaderLimits()


class RequestGuard:
    """Pure ASGI middleware: request id in and out, header limits, body size cap, JSON-only
    bodies. The header limits hold behind any server (uvicorn, Mangum on Lambda); the
    gateway's own server also enforces them while reading (``gateway.edge.server``)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        header_limits: HeaderLimits = DEFAULT_HEADER_LIMITS,
        answer_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.header_limits = header_limits
        self.answer_headers = list(answer_headers)  # on every answer, after the request id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hdrs = dict(scope["headers"])
        rid = hdrs.get(b"x-request-id", b"").decode("latin-1")
        if not _REQUEST_ID_RE.match(rid):
            rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                    *self.answer_headers,
                ]
            await send(message)

        error = self.header_limits.check(scope["headers"]) or self._check(scope, hdrs)
        if error is not None:
            await problem_response(error, rid)(scope, receive, send_with_id)
            return
        await self.app(scope, self._capped(receive), send_with_id)

    def _check(self, scope: Scope, hdrs: dict[bytes, bytes]) -> ProblemError | None:
        if scope["method"].encode() not in _BODY_METHODS:
            return None
        length = hdrs.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return PayloadTooLargeError(f"request body is limited to {self.max_body_bytes} bytes")
        has_body = length not in (None, b"0") or b"transfer-encoding" in hdrs
        ctype = hdrs.get(b"content-type", b"").split(b";")[0].strip().lower()
        if has_body and ctype != b"application/json":
            return UnsupportedMediaTypeError("request bodies must be application/json")
        return None

    def _capped(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLargeError(f"request body is limited to {limit} bytes")
            return message

        return capped


class RequestLog:
    """Pure ASGI middleware, inside :class:`RequestGuard`: a module's requests each log one
    INFO ``request`` line with the route template, status and outcome, and every line
    logged while one is handled carries its request id, module and caller hash
    (:mod:`module_kit.logs`); each is also counted, by route template and status class
    (:data:`module_kit.metrics.REQUESTS`, one EMF line). Health checks are neither."""

    def __init__(self, app: ASGIApp, module: str, quiet_paths: frozenset[str]) -> None:
        self.app = app
        self.module = module
        self.quiet_paths = quiet_paths
        self.metrics = metrics.ModuleMetrics(module)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        ctx = logs.RequestContext(scope.get("state", {}).get("request_id", ""), self.module)
        token = logs.bind_request(ctx)
        via = metrics.bind_via(metrics.via_of(scope["headers"]))
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            ctx.status = 500
            raise
        finally:
            route = scope.get("route")
            ctx.route = getattr(route, "path", "") or ""
            status = ctx.status or 500
            ctx.outcome = "ok" if status < 400 else "client-error" if status < 500 else "error"
            log.log(
                logging.ERROR if status >= 500 else logging.INFO,
                "request %s %s",
                scope["method"],
                ctx.route or scope["path"],
                extra={"duration_ms": round((time.perf_counter() - started) * 1000, 1)},
            )
            logs.unbind_request(token)
            metrics.unbind_via(via)
            self.metrics.count(
                metrics.REQUESTS, route=ctx.route or "none", code=metrics.status_class(status)
            )


_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]{1,64}$")


def checked_version(version: str) -> str:
    """``version`` if it can be a header value here (1-64 visible ASCII characters), or
    ValueError: a bad ``RELAY_VERSION`` stops the app at start-up, not on every answer."""
    if not _VISIBLE_ASCII.match(version):
        raise ValueError(f"a release version is 1-64 visible ASCII characters, not {version!r}")
    return version


class VersionHeader:
    """Pure ASGI middleware: every response says which release produced it
    (:data:`shared_contracts.headers.VERSION`). A module's app puts it outside every other
    layer (:class:`module_kit.app.ModuleApp`), so unhandled errors, which Starlette answers
    outside the app's own middleware, carry it too. One list append per response."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.version = checked_version(version)
        self._header = (headers.VERSION.encode(), version.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = self._header

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_version)


def _field_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        out.append(FieldError(location=loc, message=str(err.get("msg", "invalid"))))
    return out


def install(
    app: FastAPI,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    audience: str | None = None,
    verifier: IdentityVerifier | None = None,
    guard: bool = True,
) -> FastAPI:
    """Make ``app`` answer every error in the problem envelope.

    ``audience`` is the module's name: identity contexts signed by the gateway for another
    module are refused. The verifier is built from ``RELAY_IDENTITY_PUBLIC_KEY`` on first
    use unless one is given. ``guard=False`` leaves out :class:`RequestGuard`, for an app
    already wrapped in one.
    """
    app.state.identity_audience = audience
    app.state.identity_verifier = verifier

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            error: ProblemError = BadRequestError("request body is not valid JSON")
        else:
            error = ValidationFailedError(
                "one or more fields are invalid", errors=_field_errors(exc)
            )
        return problem_response(error, request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls = _STATUS_ERRORS.get(exc.status_code)
        if cls is not None:
            error = cls(str(exc.detail))
        elif exc.status_code == 404:
            error = ProblemError("no such route", status=404, code="no-route", title="Not found")
        elif exc.status_code == 405:
            error = ProblemError(
                "method not allowed on this route",
                status=405,
                code="method-not-allowed",
                title="Method not allowed",
            )
        else:
            error = ProblemError(
                str(exc.detail), status=exc.status_code, code="http-error", title="Request failed"
            )
        if exc.headers:
            error.headers.update(exc.headers)
        return problem_response(error, request_id_of(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", extra={"request_id": request_id_of(request)})
        return problem_response(
            ProblemError("unexpected error; it has been logged"), request_id_of(request)
        )

    if guard:
        app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    return app


# --- identity -------------------------------------------------------------------------


def _verifier(request: Request) -> IdentityVerifier:
    state = request.app.state
    if getattr(state, "identity_verifier", None) is None:
        audience = getattr(state, "identity_audience", None)
        if not audience:
            raise UnauthorizedError("this service does not accept identity contexts")
        try:
            state.identity_verifier = IdentityVerifier.from_env(audience)
        except (InvalidIdentityError, ValueError) as exc:
            log.error("identity verification is not configured: %s", exc)
            raise UnauthorizedError("this service cannot verify callers") from None
    return state.identity_verifier


def current_identity(request: Request) -> IdentityContext:
    raw = request.headers.get(headers.IDENTITY)
    if not raw:
        raise UnauthorizedError("missing identity context: call this service through the gateway")
    try:
        identity = _verifier(request).verify(raw)
    except InvalidIdentityError:
        raise UnauthorizedError("invalid identity context") from None
    ctx = logs.current_request()
    if ctx is not None:  # the same object in the dependency's (copied) context
        ctx.caller = identity.sub
    return identity


Identity = Annotated[IdentityContext, Depends(current_identity)]


def require_role(*roles: Role) -> Callable[..., IdentityContext]:
    allowed = set(roles)

    def dependency(identity: Identity) -> IdentityContext:
        if identity.role not in allowed:
            raise ForbiddenError(
                "this operation needs one of the roles: "
                + ", ".join(sorted(r.value for r in allowed))
            )
        if identity.role is Role.DRIVER and not identity.driver_id:
            raise UnauthorizedError("driver identity without a driver id")
        return identity

    return dependency


DriverIdentity = Annotated[IdentityContext, Depends(require_role(Role.DRIVER))]
DispatchIdentity = Annotated[IdentityContext, Depends(require_role(Role.DISPATCH, Role.OPS))]


def json_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting problem answers."""
    return {s: {"model": Problem, "content": {headers.PROBLEM_MEDIA_TYPE: {}}} for s in statuses}
