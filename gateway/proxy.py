"""Forwarding one request to its module, with the module's fallback when it cannot answer."""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared_contracts import headers
from shared_contracts.errors import BadRequestError, ProblemError, UnavailableError
from shared_contracts.http import problem_response
from shared_contracts.identity import IdentityContext

from .fallbacks import Call, Fallback
from .identity import SignerProvider
from .retry import is_retry_safe
from .routes import Route
from .upstream import ModuleUpstream, UpstreamUnavailable

log = logging.getLogger("relay.gateway")

# Only these client headers reach a module; everything else (cookies, client-supplied
# x-relay-* identity or internal headers, hop-by-hop headers) is dropped.
FORWARDED_REQUEST_HEADERS = ("accept", "content-type", "if-none-match", "user-agent")
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "location", "etag", "allow",
                              "cache-control", "www-authenticate", "idempotent-replayed")
DEFAULT_RETRY_AFTER_SECONDS = 5
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
IDEMPOTENCY_KEY_RE = re.compile(headers.IDEMPOTENCY_KEY_PATTERN)


class Forwarder:
    def __init__(self, upstreams: dict[str, ModuleUpstream], fallbacks: dict[str, Fallback],
                 signer: SignerProvider) -> None:
        self.upstreams = upstreams
        self.fallbacks = fallbacks
        self.signer = signer
        self.served: Counter[str] = Counter()   # "module:fallback-kind" -> count
        self.unavailable: Counter[str] = Counter()

    async def forward(self, request: Request, route: Route, identity: IdentityContext | None,
                      request_id: str) -> Response:
        method = request.method
        upstream = self.upstreams[route.module]
        out = {k: v for k in FORWARDED_REQUEST_HEADERS if (v := request.headers.get(k))}
        out[headers.REQUEST_ID] = request_id
        if identity is not None:
            out[headers.IDENTITY] = self.signer.get().sign(identity, audience=route.module)
        # Every write carries an idempotency key, so that retries and deferred replays are
        # applied once. The client's own key wins; the gateway makes one otherwise.
        key = request.headers.get(headers.IDEMPOTENCY_KEY)
        if key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise BadRequestError("Idempotency-Key must be 8-64 characters of A-Z a-z 0-9 _ -",
                                  code="invalid-idempotency-key")
        if key is None and method in WRITE_METHODS:
            key = "gw-" + uuid.uuid4().hex
        if key is not None:
            out[headers.IDEMPOTENCY_KEY] = key

        path = request.scope["path"]
        raw_path = (request.scope.get("raw_path") or path.encode()).decode("latin-1")
        query = request.scope.get("query_string", b"").decode("latin-1")
        body = await request.body()
        call = Call(module=route.module, method=method, path=path, query=query,
                    body=body, identity=identity, idempotency_key=key, request_id=request_id,
                    forwarded_headers={k: v for k, v in out.items()
                                       if k in ("content-type", "accept")})
        fallback = self.fallbacks.get(route.fallback_for(method) or "")
        try:
            answer = await upstream.send(method, raw_path + (f"?{query}" if query else ""), out,
                                         body or None, retry_safe=is_retry_safe(method, bool(key)))
        except UpstreamUnavailable as exc:
            return await self._degrade(call, fallback, exc)
        content_type = answer.headers.get("content-type", "application/json")
        if fallback is not None:
            fallback.remember(call, answer.status_code, answer.content, content_type)
        return Response(
            content=answer.content, status_code=answer.status_code,
            headers={k: v for k in FORWARDED_RESPONSE_HEADERS if (v := answer.headers.get(k))},
        )

    async def _degrade(self, call: Call, fallback: Fallback | None,
                       exc: UpstreamUnavailable) -> Response:
        if fallback is not None:
            served = await fallback.serve(call)
            if served is not None:
                self.served[f"{call.module}:{fallback.kind.value}"] += 1
                log.info("%s %s served by %s fallback (%s; request %s)", call.method, call.path,
                         fallback.kind.value, exc.reason, call.request_id)
                return served
        self.unavailable[call.module] += 1
        log.warning("%s %s: %s %s, no fallback answer (request %s)", call.method, call.path,
                    call.module, exc.reason, call.request_id)
        raise UnavailableError(f"the {call.module} service is unavailable ({exc.reason})",
                               retry_after=DEFAULT_RETRY_AFTER_SECONDS)


# Served by the FastAPI app itself; every other path is a forward (or a "no-route" 404).
LOCAL_PATHS = frozenset({"/healthz", "/openapi.json"})
LOCAL_PREFIXES = ("/ops/",)


class ProxyFastPath:
    """Pure ASGI middleware: forwarded requests go straight to ``handler``, errors answered
    in the problem envelope; the gateway's own routes go on to FastAPI."""

    def __init__(self, app: ASGIApp, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = app
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in LOCAL_PATHS or path.startswith(LOCAL_PREFIXES):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await self.handler(request)
        except ProblemError as exc:
            response = problem_response(exc, scope.get("state", {}).get("request_id"))
        except Exception:
            log.exception("unhandled error forwarding %s", path)
            response = problem_response(ProblemError("unexpected error; it has been logged"),
                                        scope.get("state", {}).get("request_id"))
        await response(scope, receive, send)
