"""Forwarding one request to a module over the shared ``httpx.AsyncClient``."""

from __future__ import annotations

import logging

import httpx
from starlette.requests import Request
from starlette.responses import Response

from shared_contracts import headers
from shared_contracts.errors import UnavailableError, UpstreamTimeoutError
from shared_contracts.identity import IdentityContext

from .routes import ModuleConfig

log = logging.getLogger("relay.gateway")

# Only these client headers reach a module; everything else (cookies, client-supplied
# x-relay-* identity or internal headers, hop-by-hop headers) is dropped.
FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "idempotency-key", "if-none-match",
                             "user-agent")
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "location", "etag",
                              "cache-control", "www-authenticate")
DEFAULT_RETRY_AFTER_SECONDS = 5


class Forwarder:
    def __init__(self, client: httpx.AsyncClient, auth: httpx.Auth | None = None) -> None:
        self.client = client
        self.auth = auth

    async def forward(self, request: Request, module: ModuleConfig,
                      identity: IdentityContext | None, request_id: str) -> Response:
        out_headers = {k: v for k in FORWARDED_REQUEST_HEADERS
                       if (v := request.headers.get(k)) is not None}
        out_headers[headers.REQUEST_ID] = request_id
        if identity is not None:
            out_headers[headers.IDENTITY] = identity.encode()
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        url = module.upstreams[0] + raw_path.decode("latin-1")
        if query := request.scope.get("query_string"):
            url += "?" + query.decode("latin-1")
        timeout = httpx.Timeout(module.timeout_seconds, connect=module.connect_timeout_seconds)
        body = await request.body()
        try:
            upstream = await self.client.request(
                request.method, url, content=body or None, headers=out_headers,
                timeout=timeout, auth=self.auth or httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            log.warning("module %s timed out (request %s)", module.name, request_id)
            raise UpstreamTimeoutError(f"the {module.name} service did not answer in time") from None
        except httpx.TransportError as exc:
            log.warning("module %s unreachable: %s (request %s)", module.name, exc, request_id)
            raise UnavailableError(f"the {module.name} service is unavailable",
                                   retry_after=DEFAULT_RETRY_AFTER_SECONDS) from None
        return Response(
            content=upstream.content,
            status_code=upstream.status_code,
            headers={k: v for k in FORWARDED_RESPONSE_HEADERS
                     if (v := upstream.headers.get(k)) is not None},
        )
