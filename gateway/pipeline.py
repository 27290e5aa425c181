"""The gateway's request pipeline: every step a request goes through, in order, in one list.

Each step is a small pure-ASGI class with one job that calls the next step (Starlette's
middleware shape, without its ``Request``/``Response`` objects on the way in: forwards are
the hot path). :func:`gateway_steps` lists them, :func:`build_pipeline` composes them:

    RequestGuard -> LocalRoutes -> ProblemAnswers -> PathGuard -> MatchRoute
        -> ShedLoad -> CheckAppVersion -> Authenticate -> Authorize -> RateLimit -> Forward

- ``RequestGuard`` (``http``): request id in and out (and the gateway's region out), header
  limits, body cap, JSON bodies;
- ``LocalRoutes``: the gateway's own routes (health, ops, OpenAPI, deferred status) go to
  the FastAPI app; which paths those are is read from its registered routes;
- ``ProblemAnswers``: an error raised by a later step is answered in the problem envelope,
  by the FastAPI app's own exception handlers (the one mapping, ``http.install``);
- ``PathGuard``: no dot segments or encoded slashes; a trailing slash is dropped;
- ``MatchRoute``: the route table's route for the path, or 404 ``no-route``;
- ``ShedLoad``: near the process's capacity, the route's tier is shed (least important
  first) with a prebuilt 503 ``overloaded``, before any other work; admitted requests are
  counted in flight (``gateway.edge.shedding``; the gateway's own routes never get here);
- ``CheckAppVersion``: the app's version (``Relay-App-Version`` or its User-Agent) against
  the route's minimum (426 ``upgrade-required``; malformed: 400), counted by version; a
  deprecated operation's answers get ``Deprecation``, ``Sunset`` and ``Link``
  (``gateway.edge.appversion``);
- ``Authenticate``: the bearer token's identity, where the route needs one;
- ``Authorize``: the identity's role is one the route allows;
- ``RateLimit``: per caller (or per client address on public routes) and route;
- ``Forward``: the module's answer, or its fallback's (``Forwarder.forward``); on a route
  with ``etag = true``, a GET's 200 is tagged and ``If-None-Match`` answered with 304
  (``conditional_get``).

Inside ``Forward``, in order (each one small unit; the list is
``gateway.forwarding.FORWARD_STEPS``):

    choose upstream -> bulkhead -> retry -> deadline -> breaker -> timeout -> fault
        -> transport -> fallback (when the module gave no answer)

Steps pass what they learn to later ones in ``scope["state"]`` (``route``, ``headers``,
``identity``, ``answer_headers``: headers every answer gets, a problem answer too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.edge.appversion import AppVersions, CheckAppVersion
from gateway.edge.clientaddr import ClientAddress
from gateway.edge.shedding import Shedder, ShedLoad
from gateway.forwarding.conditional import conditional_get
from gateway.forwarding.forwarder import OUTCOME_LIVE, Forwarder, log
from gateway.ops.metrics import OUTCOME_FAILED, OUTCOME_REFUSED, RequestMetrics
from gateway.routing.routes import Route, RouteTable
from gateway.security.auth import Authenticator
from gateway.security.ratelimit import Limit, RateLimiter
from module_kit import http, logs
from shared_contracts.errors import BadRequestError, ForbiddenError, NotFoundError, ProblemError
from shared_contracts.identity import IdentityContext

Step = Callable[[ASGIApp], ASGIApp]  # a step, given the next one


def has_dot_segment(path: str) -> bool:
    """A ``.`` or ``..`` segment, or an encoded dot or slash (the cheap tests first: most
    paths have neither a ``%`` nor a ``.``)."""
    if "%" in path:
        lowered = path.lower()
        if "%2e" in lowered or "%2f" in lowered:
            return True
    return "." in path and any(seg in (".", "..") for seg in path.split("/"))


def route_paths(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[str]:
    """Every path template a FastAPI app's routes serve. An included router is an entry
    of its own in FastAPI 0.16x (its routes under ``original_router``, its prefix in
    ``include_context``); a Starlette ``Mount`` keeps them under ``routes``. A route of
    any other shape stops start-up rather than being forwarded to a module by mistake."""
    for route in routes:
        path = getattr(route, "path", None)
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from route_paths(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(path, str) and getattr(route, "routes", None):
            # a Mount: BaseRoute does not declare its routes
            yield from route_paths(route.routes, prefix + path)  # type: ignore[attr-defined]
        elif isinstance(path, str):
            yield prefix + path
        else:
            raise TypeError(f"cannot tell which paths {route!r} serves")


def local_paths(routes: Sequence[BaseRoute]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The paths a FastAPI app serves itself, from its registered routes: each route's
    path exactly, and every path under the first segment of a route with more than one
    (``/ops/status`` claims ``/ops/...``, ``/deferred/{id}`` claims ``/deferred/...``)."""
    exact, prefixes = set(), set()
    for path in route_paths(routes):
        if "{" not in path:
            exact.add(path)
        first, _, rest = path[1:].partition("/")
        if rest:
            prefixes.add(f"/{first}/")
    return frozenset(exact), tuple(sorted(prefixes))


class LocalRoutes:
    """The gateway's own routes (and every non-HTTP scope, e.g. lifespan) go to ``api``;
    everything else goes on down the pipeline."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self.paths, self.prefixes = local_paths(api.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.paths or path.startswith(self.prefixes):
            await self.api(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ProblemAnswers:
    """Errors raised by the steps after it are answered by ``api``'s exception handlers
    (the ones ``http.install`` registers: the one place exceptions become problem
    answers). An unexpected error is logged with its traceback first."""

    def __init__(self, app: ASGIApp, api: FastAPI, metrics: RequestMetrics | None = None) -> None:
        self.app = app
        self.handlers: dict[Any, Callable[..., Any]] = dict(api.exception_handlers)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not isinstance(exc, ProblemError):
                log.exception("unhandled error forwarding %s", scope.get("path"))
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
            extra = scope["state"].get("answer_headers")
            if extra:  # e.g. a deprecated operation's Deprecation, Sunset and Link
                response.raw_headers.extend(extra)
            if self.metrics is not None and not scope["state"].get("metered"):
                # refused before the forward (no route, auth, limits): counted here
                route: Route | None = scope["state"].get("route")
                module = route.module if route is not None else "gateway"
                status = response.status_code
                self.metrics.record(
                    module,
                    module,
                    route.prefix if route is not None else "",
                    OUTCOME_REFUSED if status < 500 else OUTCOME_FAILED,
                    status,
                    0.0,
                )
            await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None


class PathGuard:
    """Refuses ``.``/``..`` segments and encoded dots or slashes (400); drops a trailing
    slash (``/loads/`` is ``/loads``: a module would answer it with a redirect to its own
    address)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]  # not request.url: that builds a URL object per request
        raw_path = (scope.get("raw_path") or b"").decode("latin-1")
        if has_dot_segment(raw_path or path):
            raise BadRequestError("path segments '.' and '..' and encoded slashes are not allowed")
        if path[-1:] == "/" and path != "/":
            scope["path"] = path.rstrip("/") or "/"
            scope["raw_path"] = raw_path.rstrip("/").encode("latin-1") or None
        await self.app(scope, receive, send)


class MatchRoute:
    """The route table's route for the path (``scope["state"]["route"]``), or 404."""

    def __init__(self, app: ASGIApp, table: RouteTable) -> None:
        self.app = app
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.table.match(scope["path"])
        if route is None:
            raise NotFoundError("no such route", code="no-route")
        scope["state"]["route"] = route
        await self.app(scope, receive, send)


class Authenticate:
    """The caller's identity from the bearer token (``scope["state"]["identity"]``; None on
    a public route). No token, or a bad one: 401. The request's headers are read into a
    dict once (``scope["state"]["headers"]``; ASGI names are lower case), for the token and
    for ``Forward``: here, unless ``CheckAppVersion`` did."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        hdrs = state.get("headers")
        if hdrs is None:
            hdrs = state["headers"] = dict(scope["headers"])
        identity = None
        if state["route"].auth == "required":
            authorization = hdrs.get(b"authorization")
            identity = await self.authenticator.authenticate(
                None if authorization is None else authorization.decode("latin-1")
            )
        state["identity"] = identity
        await self.app(scope, receive, send)


class Authorize:
    """The identity's role is one the route allows, or 403."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        identity: IdentityContext | None = state["identity"]
        route: Route = state["route"]
        if identity is not None and identity.role not in route.roles:
            raise ForbiddenError(f"role {identity.role.value} may not call {route.prefix}")
        await self.app(scope, receive, send)


class RateLimit:
    """Per caller and route prefix, at the caller's role's rate; public routes per client
    address at the anonymous rate. Over it: 429."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        limits: dict[str, Limit],
        client_address: ClientAddress,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.limits = limits
        self.client_address = client_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        identity: IdentityContext | None = state["identity"]
        prefix = state["route"].prefix
        if identity is not None:
            self.limiter.check(identity.sub, prefix, self.limits[identity.role.value])
        else:
            caller = "ip:" + self.client_address(scope)
            self.limiter.check(caller, prefix, self.limits["anonymous"])
        await self.app(scope, receive, send)


class Forward:
    """The last step: the module's answer (or its fallback's), sent back as raw ASGI. On a
    route with ``etag = true``, that answer goes through :func:`conditional_get` first
    (one flag read on every other route).

    Every line logged while forwarding carries the request's fields (request id, module,
    route prefix, caller hash: ``logs.bind_request``); the forward's outcome is set on
    them where it is decided. With ``access_log``, one INFO ``request`` line per forward
    (off by default: docs/performance.md has its cost)."""

    def __init__(
        self,
        forwarder: Forwarder,
        *,
        access_log: bool = False,
        metrics: RequestMetrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.forwarder = forwarder
        self.access_log = access_log
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        state["metered"] = True  # counted here, not by ProblemAnswers
        started = self.clock()
        route: Route = state["route"]
        identity: IdentityContext | None = state["identity"]
        request_id = state.get("request_id") or ""
        ctx = logs.RequestContext(
            request_id, route.module, route.prefix, identity.sub if identity else None
        )
        token = logs.bind_request(ctx)
        try:
            response = await self.forwarder.forward(
                scope, receive, state["headers"], route, identity, request_id
            )
            if route.etag:
                response = conditional_get(scope["method"], scope["headers"], response)
                ctx.status = response.status_code
            if ctx.outcome is None:
                ctx.outcome, ctx.status = OUTCOME_LIVE, response.status_code
            await response(scope, receive, send)
        except ProblemError as exc:
            if ctx.status is None:
                ctx.status = exc.status
            raise
        finally:
            if self.metrics is not None:
                record(self.metrics, ctx, self.clock() - started)
            if self.access_log:
                log.info("request %s %s", scope["method"], scope["path"])
            logs.unbind_request(token)


def record(metrics: RequestMetrics, ctx: logs.RequestContext, seconds: float) -> None:
    """A forwarded request in the metrics, by what its log context says of it."""
    status = ctx.status if ctx.status is not None else 500  # an unexpected error
    outcome = ctx.outcome
    if outcome is None:  # refused by the forward itself (e.g. a bad key), or a bug
        outcome = OUTCOME_REFUSED if status < 500 else OUTCOME_FAILED
    metrics.record(ctx.module, ctx.unit or ctx.module, ctx.route, outcome, status, seconds)


def gateway_steps(
    *,
    api: FastAPI,
    table: RouteTable,
    authenticator: Authenticator,
    limiter: RateLimiter,
    limits: dict[str, Limit],
    client_address: ClientAddress,
    max_body_bytes: int,
    header_limits: http.HeaderLimits,
    region: str | None = None,
    metrics: RequestMetrics | None = None,
    shedder: Shedder | None = None,
    app_versions: AppVersions | None = None,
) -> list[Step]:
    """The steps before :class:`Forward`, in request order. Every answer says which
    region's gateway gave it (``relay-region``), as every answer carries its request id.
    ``shedder``: load shedding right after the route is known (none without one);
    ``app_versions``: the app version check after it (none without one)."""
    return [
        partial(
            http.RequestGuard,
            max_body_bytes=max_body_bytes,
            header_limits=header_limits,
            answer_headers=((b"relay-region", region.encode()),) if region else (),
        ),
        partial(LocalRoutes, api=api),
        partial(ProblemAnswers, api=api, metrics=metrics),
        PathGuard,
        partial(MatchRoute, table=table),
        *(
            [partial(ShedLoad, shedder=shedder, table=table, metrics=metrics)]
            if shedder is not None
            else []
        ),
        *([partial(CheckAppVersion, versions=app_versions)] if app_versions is not None else []),
        partial(Authenticate, authenticator=authenticator),
        Authorize,
        partial(RateLimit, limiter=limiter, limits=limits, client_address=client_address),
    ]


def build_pipeline(steps: Sequence[Step], last: ASGIApp) -> ASGIApp:
    """``steps`` in request order, each wrapping the ones after it; ``last`` at the end."""
    app = last
    for step in reversed(steps):
        app = step(app)
    return app


def step_names(steps: Sequence[Step]) -> Iterator[str]:
    """The steps' names, for docs and tests."""
    for step in steps:
        func = step.func if isinstance(step, partial) else step
        yield getattr(func, "__name__", type(func).__name__)
