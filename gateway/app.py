"""The gateway app: authenticate, match the route table, forward to the module.

``create_app(settings=None, *, transport=None, routes=None, authenticator=None)``: tests
pass an ``httpx`` transport (``MockTransport``, ``ASGITransport``, or respx's mock) so
no network is needed.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from starlette.responses import Response

from shared_contracts import headers, http
from shared_contracts.errors import BadRequestError, ForbiddenError, NotFoundError

from .auth import Authenticator, DevTokenAuthenticator, NoAuthenticator
from .config import GatewaySettings
from .proxy import Forwarder
from .routes import RouteTable
from .sigv4 import SigV4Auth

PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def default_authenticator(settings: GatewaySettings) -> Authenticator:
    if settings.dev_token_secret:
        return DevTokenAuthenticator(settings.dev_token_secret, issuer=settings.token_issuer,
                                     audience=settings.token_audience)
    return NoAuthenticator()


def _has_dot_segment(path: str) -> bool:
    lowered = path.lower()
    return "%2e" in lowered or "%2f" in lowered or any(
        seg in (".", "..") for seg in path.split("/"))


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    routes: RouteTable | None = None,
    authenticator: Authenticator | None = None,
) -> FastAPI:
    settings = settings or GatewaySettings()
    table = routes or RouteTable.load(settings.routes_file)
    auth = authenticator or default_authenticator(settings)
    client = httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_connections=settings.max_connections,
                            max_keepalive_connections=settings.max_keepalive_connections),
    )
    forwarder = Forwarder(client, SigV4Auth(settings.aws_region) if settings.sign_upstreams else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="Relay gateway", version="1", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.routes = table
    http.install(app, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def proxy(request: Request) -> Response:
        path = request.url.path
        raw_path = (request.scope.get("raw_path") or b"").decode("latin-1")
        if _has_dot_segment(raw_path or path):
            raise BadRequestError("path segments '.' and '..' and encoded slashes are not allowed")
        route = table.match(path)
        if route is None:
            raise NotFoundError("no such route", code="no-route")
        identity = None
        if route.auth == "required":
            identity = auth.authenticate(request.headers.get("authorization"))
            if identity.role not in route.roles:
                raise ForbiddenError(f"role {identity.role.value} may not call {route.prefix}")
        return await forwarder.forward(request, table.modules[route.module], identity,
                                       http.request_id_of(request) or "")

    app.add_api_route("/{path:path}", proxy, methods=PROXY_METHODS, include_in_schema=False)
    return app
