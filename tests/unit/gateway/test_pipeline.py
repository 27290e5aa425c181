"""The request pipeline's steps, each on its own, and the order they are composed in."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute

from gateway.edge.clientaddr import ClientAddress
from gateway.pipeline import (
    Authenticate,
    Authorize,
    Forward,
    LocalRoutes,
    MatchRoute,
    PathGuard,
    ProblemAnswers,
    RateLimit,
    build_pipeline,
    local_paths,
    route_paths,
    step_names,
)
from gateway.routing.routes import Route
from gateway.security.ratelimit import Limit, RateLimitedError, RateLimiter
from shared_contracts.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from shared_contracts.identity import IdentityContext, Role
from tests.fakes import MonotonicClock

pytestmark = pytest.mark.anyio

LOADS = Route(prefix="/loads", module="loads", roles=frozenset({Role.DRIVER}))
KEYS = Route(prefix="/gatepass/keys", module="gatepass", auth="none")
DRIVER = IdentityContext(sub="D-1001", role=Role.DRIVER, driver_id="D-1001")
GATE = IdentityContext(sub="gate-1", role=Role.GATE)


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Next:
    """The step after the one under test: records the scope it was called with."""

    def __init__(self) -> None:
        self.scopes: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scopes.append(scope)


def http_scope(path: str = "/loads", **state) -> dict:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer t")],
        "client": ("203.0.113.9", 50000),
        "state": {"request_id": "req-00000001", **state},
    }


async def run(app, scope) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


# --- composition ---------------------------------------------------------------------


def test_the_gateway_composes_its_steps_in_request_order(gateway):
    app = gateway.app
    assert list(step_names(app.steps)) == [
        "RequestGuard",
        "LocalRoutes",
        "ProblemAnswers",
        "PathGuard",
        "MatchRoute",
        "ShedLoad",
        "CheckAppVersion",
        "Authenticate",
        "Authorize",
        "RateLimit",
    ]
    # the composed app is the first step, wrapping the rest down to Forward
    chain, layer = [], app.asgi
    while layer is not None:
        chain.append(type(layer).__name__)
        layer = getattr(layer, "app", None)
    assert chain == [*step_names(app.steps), "Forward"]


async def test_build_pipeline_calls_steps_first_to_last():
    seen: list[str] = []

    def step(name):
        def wrap(app):
            async def layer(scope, receive, send):
                seen.append(name)
                await app(scope, receive, send)

            return layer

        return wrap

    last = Next()
    await run(build_pipeline([step("a"), step("b"), step("c")], last), http_scope())
    assert seen == ["a", "b", "c"] and len(last.scopes) == 1


# --- LocalRoutes ---------------------------------------------------------------------


async def endpoint() -> dict[str, str]:
    return {}


async def tracked_endpoint(tracking_id: str) -> dict[str, str]:
    return {}


def fastapi_app() -> FastAPI:
    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    api.get("/healthz")(endpoint)
    ops = APIRouter(prefix="/ops")
    ops.get("/status")(endpoint)
    tracked = APIRouter()
    tracked.get("/{tracking_id}")(tracked_endpoint)
    api.include_router(ops)
    api.include_router(tracked, prefix="/deferred")
    return api


def test_local_paths_are_read_from_the_apps_registered_routes():
    api = fastapi_app()
    assert sorted(route_paths(api.routes)) == ["/deferred/{tracking_id}", "/healthz", "/ops/status"]
    assert local_paths(api.routes) == (
        frozenset({"/healthz", "/ops/status"}),
        ("/deferred/", "/ops/"),
    )


def test_mounted_routes_count_and_an_unknown_route_shape_stops_start_up():
    mount = Mount("/admin", routes=[StarletteRoute("/users", lambda r: None)])
    assert list(route_paths([mount])) == ["/admin/users"]
    with pytest.raises(TypeError, match="cannot tell which paths"):
        list(route_paths([object()]))


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("/healthz", True),
        ("/ops/status", True),
        ("/ops/anything", True),
        ("/deferred/key-1", True),
        ("/loads", False),
        ("/healthz/x", False),
        ("/deferred", False),
    ],
)
async def test_local_routes_go_to_the_api_and_the_rest_down_the_pipeline(path, local):
    api_calls = Next()
    api = fastapi_app()
    step = LocalRoutes(Next(), api=api)
    step.api = api_calls  # type: ignore[assignment]
    await run(step, http_scope(path))
    assert (len(api_calls.scopes) == 1) is local
    assert (len(step.app.scopes) == 1) is not local


async def test_every_route_the_gateway_registers_is_served_locally(gateway):
    local = gateway.app.asgi.app  # RequestGuard -> LocalRoutes
    assert isinstance(local, LocalRoutes)
    paths = list(route_paths(gateway.app.api.routes))
    assert {"/healthz", "/openapi.json", "/ops/status", "/deferred/{tracking_id}"} <= set(paths)
    for path in paths:
        concrete = path.replace("{", "").replace("}", "")
        assert concrete in local.paths or concrete.startswith(local.prefixes), path


# --- ProblemAnswers ------------------------------------------------------------------


def problem_answers(error: Exception) -> ProblemAnswers:
    api = FastAPI()
    from module_kit import http

    http.install(api, guard=False)

    async def failing(scope, receive, send):
        raise error

    return ProblemAnswers(failing, api=api)


async def test_problem_errors_become_problem_answers_with_the_request_id():
    sent = await run(problem_answers(NotFoundError("no such route", code="no-route")), http_scope())
    assert sent[0]["status"] == 404
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    body = json.loads(sent[1]["body"])
    assert body["type"] == "urn:relay:problem:no-route"
    assert body["request_id"] == "req-00000001"


async def test_unexpected_errors_are_logged_and_answered_500(caplog):
    with caplog.at_level(logging.ERROR):
        sent = await run(problem_answers(RuntimeError("boom")), http_scope("/loads/L-1"))
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"])["detail"] == "unexpected error; it has been logged"
    assert "unhandled error forwarding /loads/L-1" in caplog.text and "boom" in caplog.text


# --- PathGuard, MatchRoute -----------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/loads/../ops/status", "/loads/./x", "/loads/%2e%2e/x", "/a%2Fb"]
)
async def test_dot_segments_and_encoded_slashes_are_refused(path):
    step = PathGuard(Next())
    with pytest.raises(BadRequestError):
        await run(step, http_scope(path))
    assert step.app.scopes == []


@pytest.mark.parametrize("path", ["/loads/L-1.v2", "/loads/...x", "/loads/%41", "/a.b/c"])
async def test_dots_and_escapes_inside_a_segment_pass(path):
    step = PathGuard(Next())
    await run(step, http_scope(path))
    assert step.app.scopes[0]["path"] == path


async def test_a_trailing_slash_is_dropped_before_matching():
    step = PathGuard(Next())
    await run(step, http_scope("/loads/L-1/"))
    (scope,) = step.app.scopes
    assert (scope["path"], scope["raw_path"]) == ("/loads/L-1", b"/loads/L-1")


class Table:
    def __init__(self, *routes: Route) -> None:
        self.routes = routes

    def match(self, path: str) -> Route | None:
        return next((r for r in self.routes if r.matches(path)), None)


def test_the_route_table_matches_by_first_segment_as_a_full_scan_would(gateway):
    table = gateway.app.state.routes
    paths = [
        "/",
        "",
        "loads",
        "/loads",
        "/loads/",
        "/loads/L-1",
        "/loadsx",
        "/gatepass",
        "/gatepass/verify",
        "/gatepass/verify/x",
        "/gatepass/keys",
        "/gatepass/P-1",
        "/dispatch",
        "/dispatch/assignments",
        "/dispatch/messages/1",
        "/message",
        "/navigate?x",
        "/ops/status",
        "/nowhere/loads",
    ]
    for path in paths:
        assert table.match(path) is next((r for r in table.routes if r.matches(path)), None)
    assert table.match("/gatepass/verify").prefix == "/gatepass/verify"


async def test_match_route_records_the_route_or_answers_no_route():
    step = MatchRoute(Next(), table=Table(LOADS))
    await run(step, http_scope("/loads/L-1"))
    assert step.app.scopes[0]["state"]["route"] is LOADS
    with pytest.raises(NotFoundError) as caught:
        await run(step, http_scope("/nowhere"))
    assert caught.value.code == "no-route" and len(step.app.scopes) == 1


# --- Authenticate, Authorize, RateLimit ----------------------------------------------


class Authenticator:
    def __init__(self, identity: IdentityContext | None) -> None:
        self.identity = identity
        self.seen: list[str | None] = []

    async def authenticate(self, authorization: str | None) -> IdentityContext:
        self.seen.append(authorization)
        if self.identity is None:
            raise UnauthorizedError("bad token")
        return self.identity


async def test_authenticate_reads_the_bearer_token_where_the_route_needs_one():
    auth = Authenticator(DRIVER)
    step = Authenticate(Next(), authenticator=auth)
    await run(step, http_scope(route=LOADS))
    assert step.app.scopes[0]["state"]["identity"] is DRIVER and auth.seen == ["Bearer t"]
    await run(step, http_scope("/gatepass/keys", route=KEYS))
    assert step.app.scopes[1]["state"]["identity"] is None and len(auth.seen) == 1


async def test_authenticate_stops_a_bad_token():
    step = Authenticate(Next(), authenticator=Authenticator(None))
    with pytest.raises(UnauthorizedError):
        await run(step, http_scope(route=LOADS))
    assert step.app.scopes == []


async def test_authorize_lets_only_the_routes_roles_through():
    step = Authorize(Next())
    await run(step, http_scope(route=LOADS, identity=DRIVER))
    with pytest.raises(ForbiddenError, match="role gate may not call /loads"):
        await run(step, http_scope(route=LOADS, identity=GATE))
    await run(step, http_scope("/gatepass/keys", route=KEYS, identity=None))
    assert len(step.app.scopes) == 2


async def test_rate_limit_counts_callers_by_identity_or_by_address():
    limits = {"driver": Limit(per_second=1, burst=2), "anonymous": Limit(per_second=1, burst=1)}
    step = RateLimit(
        Next(),
        limiter=RateLimiter(clock=MonotonicClock()),
        limits=limits,
        client_address=ClientAddress(),
    )
    for _ in range(2):
        await run(step, http_scope(route=LOADS, identity=DRIVER))
    with pytest.raises(RateLimitedError):
        await run(step, http_scope(route=LOADS, identity=DRIVER))
    await run(step, http_scope("/gatepass/keys", route=KEYS, identity=None))
    with pytest.raises(RateLimitedError):
        await run(step, http_scope("/gatepass/keys", route=KEYS, identity=None))
    assert len(step.app.scopes) == 3


# --- Forward -------------------------------------------------------------------------


async def test_forward_hands_the_steps_findings_to_the_forwarder_and_sends_its_answer():
    from starlette.responses import Response

    calls = []

    class Forwarder:
        async def forward(self, scope, receive, hdrs, route, identity, request_id):
            calls.append((hdrs, route, identity, request_id))
            return Response(b"{}", status_code=200, media_type="application/json")

    hdrs = {b"authorization": b"Bearer t"}
    scope = http_scope(route=LOADS, identity=DRIVER, headers=hdrs)
    sent = await run(Forward(Forwarder()), scope)  # type: ignore[arg-type]
    assert calls == [({b"authorization": b"Bearer t"}, LOADS, DRIVER, "req-00000001")]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"{}"
