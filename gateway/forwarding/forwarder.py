"""The pipeline's last step's work: one request to its module, with the route's fallback
when the module gives no answer (``Forwarder.forward``)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import Receive, Scope

from gateway.cells.router import Cells
from gateway.deferred.queue import DeferredWrites
from gateway.forwarding.upstream import (
    CellMoving,
    ModuleAnswer,
    ModuleUpstream,
    ProbeRunning,
    QueuedBehind,
    UpstreamUnavailable,
)
from gateway.levers.active import ActiveLevers, ForcedFallback
from gateway.regions.router import Regions
from gateway.release.router import Releases
from gateway.release.state import Release
from gateway.release.stats import ReleaseStats
from gateway.resilience.fallbacks import Call, Fallback
from gateway.resilience.retry import is_retry_safe
from gateway.routing.directory import ModuleDirectory
from gateway.routing.routes import WRITE_METHODS, Route
from gateway.security.signer import SignerProvider
from module_kit import logs
from shared_contracts import headers
from shared_contracts.errors import BadRequestError, UnavailableError
from shared_contracts.identity import IdentityContext

log = logging.getLogger("relay.gateway")

# Only these client headers reach a module; everything else (cookies, client-supplied
# x-relay-* identity or internal headers, hop-by-hop headers) is dropped. Never
# If-None-Match: the gateway answers it (conditional.py) and needs the module's full 200.
FORWARDED_REQUEST_HEADERS = (b"accept", b"content-type", b"user-agent")
FORWARDED_RESPONSE_HEADERS = frozenset(
    {
        b"content-type",
        b"retry-after",
        b"location",
        b"etag",
        b"allow",
        b"cache-control",
        b"www-authenticate",
        b"idempotent-replayed",
    }
)
DEFAULT_RETRY_AFTER_SECONDS = 5
IDEMPOTENCY_KEY_RE = re.compile(headers.IDEMPOTENCY_KEY_PATTERN)
_CALL_HEADERS = frozenset({b"content-type", b"accept"})  # what a deferred replay re-sends
_IDENTITY = headers.IDENTITY.encode()
_IDEMPOTENCY_KEY = headers.IDEMPOTENCY_KEY.lower().encode()
_REQUEST_ID = headers.REQUEST_ID.encode()
_ACCEPTED_AT = headers.ACCEPTED_AT.encode()
_VERSION = headers.VERSION.encode()  # which version of the module answered (never forwarded)
_JSON = b"application/json"
_LOCATION = b"location"
_QUEUED = "earlier writes of this caller are still queued"
_MOVING = "the caller's data is being moved to another cell"
_FORCED = "held on its fallback by an operator's lever"


def module_location(value: bytes) -> bytes | None:
    """A module's ``Location`` as a client may see it: a path, followed through the
    gateway. An absolute URL (a module's own address, e.g. its trailing-slash redirect) is
    cut to its path and query; anything that is not a path after that is dropped."""
    if value[:1] == b"/" and value[1:2] not in (b"/", b"\\"):
        return value
    try:
        parts = urlsplit(value.decode("latin-1").strip())
    except ValueError:
        return None
    path = parts.path or "/"
    if not (parts.scheme or parts.netloc) or path[:1] != "/" or path[1:2] in ("/", "\\"):
        return None
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


OUTCOME_LIVE = "live"  # the module's own answer
OUTCOME_UNAVAILABLE = "unavailable"  # no answer and no fallback's: 503


def _outcome(outcome: str, status: int, unit: str) -> str:
    """Record the request's outcome on its log context (the access line and the metrics
    read it), and the unit it was for when no upstream was asked."""
    ctx = logs.current_request()
    if ctx is not None:
        ctx.outcome, ctx.status = outcome, status
        ctx.unit = ctx.unit or unit
    return outcome


def _fields(call: Call, outcome: str | None = None, status: int | None = None) -> dict[str, object]:
    return logs.fields(
        request_id=call.request_id,
        module=call.unit,
        outcome=outcome,
        status=status,
        caller=call.identity.sub if call.identity else None,
    )


class ForwardedResponse(Response):
    """A module's answer on its way back: headers picked once, the body passed through as is."""

    def __init__(
        self, status_code: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.raw_headers = raw_headers
        self.background = None


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise BadRequestError("the client went away before sending its body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def idempotency_key(raw: bytes | None, write: bool) -> str | None:
    """The request's idempotency key. Every write carries one, so that retries and deferred
    replays are applied once: the client's own key wins (checked: 400 if malformed), the
    gateway makes one otherwise. A read keeps the client's, if any."""
    if raw is not None:
        key = raw.decode("latin-1")
        if not IDEMPOTENCY_KEY_RE.fullmatch(key):
            raise BadRequestError(
                "Idempotency-Key must be 8-64 characters of A-Z a-z 0-9 _ -",
                code="invalid-idempotency-key",
            )
        return key
    return "gw-" + uuid.uuid4().hex if write else None


def module_headers(
    hdrs: dict[bytes, bytes],
    request_id: str,
    signed_identity: bytes | None,
    key: str | None,
    accepted_at: float | None,
) -> list[tuple[bytes, bytes]]:
    """The headers a module gets: the client's few that pass (never its ``x-relay-*``,
    cookies or hop-by-hop headers), the request id, the signed identity, the idempotency
    key and, on a write, the time the gateway accepted it (``accepted_at``)."""
    out = [
        (name, value) for name in FORWARDED_REQUEST_HEADERS if (value := hdrs.get(name)) is not None
    ]
    out.append((_REQUEST_ID, request_id.encode()))
    if signed_identity is not None:
        out.append((_IDENTITY, signed_identity))
    if key is not None:
        out.append((_IDEMPOTENCY_KEY, key.encode()))
    if accepted_at is not None:  # modules stamp a write with the time it was accepted
        out.append((_ACCEPTED_AT, datetime.fromtimestamp(accepted_at, UTC).isoformat().encode()))
    return out


def fallback_call(
    scope: Scope,
    module: str,
    body: bytes,
    identity: IdentityContext | None,
    key: str | None,
    request_id: str,
    out: list[tuple[bytes, bytes]],
    accepted_at: float,
    unit: str = "",
) -> Call:
    """The request as a fallback (and a deferred replay) knows it."""
    return Call(
        unit=unit,
        module=module,
        method=scope["method"],
        path=scope["path"],
        query=scope.get("query_string", b"").decode("latin-1"),
        body=body,
        identity=identity,
        idempotency_key=key,
        request_id=request_id,
        # what a deferred write is replayed with (only writes are deferred)
        forwarded_headers={
            name.decode(): value.decode("latin-1") for name, value in out if name in _CALL_HEADERS
        }
        if scope["method"] in WRITE_METHODS
        else {},
        accepted_at=accepted_at,
    )


class Forwarder:
    def __init__(
        self,
        upstreams: dict[str, ModuleUpstream],
        fallbacks: dict[str, Fallback],
        signer: SignerProvider,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.perf_counter,
        directory: ModuleDirectory | None = None,
        releases: Releases | None = None,
        cells: Cells | None = None,
        regions: Regions | None = None,
        levers: ActiveLevers | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.fallbacks = fallbacks
        self.signer = signer
        self.wall_clock = wall_clock
        self.clock = clock  # a call's latency, in a release's stats
        self.directory = directory  # keeps the upstreams' URLs equal to the published ones
        self.releases = releases  # the modules' releases: which version a caller gets
        self.cells = cells  # the celled modules' placements: which cell a request goes to
        self.regions = regions  # peer regions' upstreams: where a request goes when not here
        self.levers = levers  # operators' levers: a module or cell held on its fallback
        self.release_stats = releases.stats if releases is not None else ReleaseStats(None)
        self.canary_retries: Counter[str] = Counter()  # module -> canary failures retried
        # (module, version) -> answers during releases, by the version the module says it is
        self.versions_served: Counter[tuple[str, bytes]] = Counter()
        self.served: Counter[str] = Counter()  # "module:fallback-kind" -> count
        self.unavailable: Counter[str] = Counter()
        self.fallback_errors: Counter[str] = Counter()

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        hdrs: dict[bytes, bytes],
        route: Route,
        identity: IdentityContext | None,
        request_id: str,
    ) -> Response:
        """Choose upstream: the route's module and fallback, and the request as the module
        gets it; then the module's answer through the upstream's steps, or the fallback's.
        ``hdrs``: the request's headers (ASGI names are lower case), read once."""
        if self.directory is not None:
            self.directory.keep_current()
        method = scope["method"]
        write = method in WRITE_METHODS
        body = await read_body(receive) if write else b""
        unit, moving, claim = route.module, False, None
        if self.cells is not None:
            unit, moving, claim = await self._place(self.cells, route, identity, body, write)
        signed = None if identity is None else self.sign(identity, route.module, claim)
        key = idempotency_key(hdrs.get(_IDEMPOTENCY_KEY), write)
        accepted_at = self.wall_clock()
        out = module_headers(hdrs, request_id, signed, key, accepted_at if write else None)
        call = fallback_call(
            scope, route.module, body, identity, key, request_id, out, accepted_at, unit
        )
        fallback = self.fallbacks.get(route.fallback_for(method) or "")
        if write and moving:
            # The caller's data is being copied to another cell: the write waits in the
            # deferred queue (or, with no deferred fallback, is refused with Retry-After).
            return await self._degrade(call, fallback, CellMoving(unit, _MOVING))
        if write and isinstance(fallback, DeferredWrites) and await fallback.must_queue(call):
            # Earlier writes of this caller are still queued: this one goes behind them.
            return await self._degrade(call, fallback, QueuedBehind(unit, _QUEUED))
        if self.levers is not None:
            if not self.levers.loaded:  # a fresh Lambda environment's first request
                await self.levers.load_at_start()
            if self.levers.forced_fallback(unit):
                # An operator's fallback lever: as an open breaker, the module is not called.
                return await self._degrade(call, fallback, ForcedFallback(unit, _FORCED))
        upstream = local = self.upstreams[unit]
        if self.regions is not None:
            if not self.regions.copy.loaded:  # a fresh Lambda environment's first request
                await self.regions.load_at_start()
            # This region evacuated, or its module down: a serving peer region's upstream.
            upstream = self.regions.route(unit, local)
        release = None
        if self.releases is not None and upstream is local:
            if not self.releases.loaded:  # a fresh Lambda environment's first request
                await self.releases.load_at_start()
            upstream, release = self.releases.choose(
                unit, identity.sub if identity is not None else None
            )
        try:
            if release is None:
                answer = await self.ask(upstream, scope, call, out, fallback)
            else:
                answer = await self.ask_in_release(upstream, release, scope, call, out, fallback)
        except UpstreamUnavailable as exc:
            return await self._degrade(call, fallback, exc)
        if not isinstance(answer, ModuleAnswer):
            return answer  # the half-open trial outlasted the caller: the fallback answered
        return self.respond(call, fallback, answer)

    async def _place(
        self, cells: Cells, route: Route, identity: IdentityContext | None, body: bytes, write: bool
    ) -> tuple[str, bool, tuple[tuple[str, str], ...]]:
        """The upstream (a cell of a celled module, else the module), whether the request's
        key is being moved, and the driver's cells for the identity context (a module that
        reads a celled module's data reads it from the driver's cell)."""
        if not cells.loaded:  # a fresh Lambda environment's first request
            await cells.load_at_start()
        # An idle instance reads the placements first; a write waits (deferred) as a moving
        # key's does when they cannot be read: it could land in a cell its key just left.
        fresh = cells.is_fresh() or await cells.fresh()
        driver = identity.driver_id if identity is not None else None
        claim = cells.cells_of(driver) if driver is not None else ()
        if not cells.celled(route.module):
            return route.module, False, claim
        where = cells.place(route.module, cells.key_of(route, driver, body))
        return where.unit, where.moving or (write and not fresh), claim

    def sign(
        self,
        identity: IdentityContext,
        module: str,
        cells: tuple[tuple[str, str], ...] | None = None,
    ) -> bytes:
        """The identity context for ``module`` (``x-relay-identity``), signed; with the
        caller's cells, when a module is celled."""
        return self.signer.get().sign(identity, audience=module, cells=cells).encode()

    async def ask(
        self,
        upstream: ModuleUpstream,
        scope: Scope,
        call: Call,
        out: list[tuple[bytes, bytes]],
        fallback: Fallback | None,
    ) -> ModuleAnswer | Response:
        """The module's answer (:meth:`ModuleUpstream.send`: bulkhead, retries, deadline,
        breaker, fault, transport). A caller with a fallback does not wait on the breaker's
        half-open trial past its patience: the fallback's answer is returned instead, or,
        with none there, the caller waits for the trial's outcome after all."""
        method, query = call.method, call.query
        raw_path = (scope.get("raw_path") or call.path.encode()).decode("latin-1")
        ctx = logs.current_request()
        if ctx is not None:  # the metrics' unit: the upstream asked last
            ctx.unit = upstream.name
        try:
            return await upstream.send(
                method,
                raw_path + (f"?{query}" if query else ""),
                out,
                call.body or None,
                retry_safe=is_retry_safe(method, bool(call.idempotency_key)),
                impatient=fallback is not None and method == "GET",
            )
        except ProbeRunning as exc:
            served = await self._fallback_answer(call, fallback, exc)
            if served is not None:
                return served
            return await exc.outcome()

    async def ask_in_release(
        self,
        upstream: ModuleUpstream,
        release: Release,
        scope: Scope,
        call: Call,
        out: list[tuple[bytes, bytes]],
        fallback: Fallback | None,
    ) -> ModuleAnswer | Response:
        """:meth:`ask` while the module's canary takes traffic: each call is timed and
        counted in the release's stats under the version that served it; when the canary
        gives no answer, the stable version gets the request (it is safe to repeat: a read,
        or a write with its idempotency key, which the versions share), so a canary
        driver's request is still answered live."""
        stable = self.upstreams[call.unit]
        version = release.stable_version if upstream is stable else release.canary_version
        while True:
            started = self.clock()
            try:
                # The canary's half-open trial is waited for (no fallback to answer early):
                # should it fail, the stable version answers live, not a fallback's copy.
                answer = await self.ask(
                    upstream, scope, call, out, fallback if upstream is stable else None
                )
            except UpstreamUnavailable as exc:
                self.release_stats.record(
                    call.unit,
                    release.release_id,
                    version,
                    False,
                    (self.clock() - started) * 1000,
                )
                if upstream is stable or not is_retry_safe(call.method, bool(call.idempotency_key)):
                    raise
                self.canary_retries[call.unit] += 1
                log.warning(
                    "%s %s: canary %s of %s %s; the stable version gets it (request %s)",
                    call.method,
                    call.path,
                    version,
                    call.unit,
                    exc.reason,
                    call.request_id,
                    extra=_fields(call),
                )
                upstream, version = stable, release.stable_version
                continue
            live = isinstance(answer, ModuleAnswer)  # else a fallback answered for it
            self.release_stats.record(
                call.unit, release.release_id, version, live, (self.clock() - started) * 1000
            )
            if live:
                for name, value in answer.headers:
                    if name.lower() == _VERSION:
                        self.versions_served[(call.unit, value)] += 1
                        break
            return answer

    def versions_view(self) -> dict[str, int]:
        """Answers during releases by the version the module said it is ("loads@12")."""
        return {
            f"{module}@{version.decode('latin-1')}": count
            for (module, version), count in sorted(self.versions_served.items())
        }

    def respond(self, call: Call, fallback: Fallback | None, answer: ModuleAnswer) -> Response:
        """The module's answer for the client: its headers picked (``Location`` followed
        through the gateway), a content type and length; kept by the fallback."""
        content = answer.content
        picked = [
            (lower, v)
            for name, value in answer.headers
            if (lower := name.lower()) in FORWARDED_RESPONSE_HEADERS
            and (v := value if lower != _LOCATION else module_location(value)) is not None
        ]
        content_type = next((v for n, v in picked if n == b"content-type"), None)
        if content_type is None:
            content_type = _JSON
            picked.append((b"content-type", _JSON))
        picked.append((b"content-length", str(len(content)).encode()))
        if fallback is not None:
            fallback.remember(call, answer.status_code, content, content_type.decode("latin-1"))
        return ForwardedResponse(answer.status_code, content, picked)

    async def _serve_fallback(self, fallback: Fallback, call: Call) -> Response | None:
        """A fallback that fails is a fallback with no answer: never a 500 instead of a 503."""
        try:
            return await fallback.serve(call)
        except Exception as exc:  # e.g. a cached copy of an unexpected shape
            self.fallback_errors[f"{call.unit}:{fallback.kind.value}"] += 1
            log.error(
                "%s fallback failed for %s %s: %r (request %s)",
                fallback.kind.value,
                call.method,
                call.path,
                exc,
                call.request_id,
                extra=_fields(call),
            )
            return None

    async def _fallback_answer(
        self, call: Call, fallback: Fallback | None, exc: UpstreamUnavailable
    ) -> Response | None:
        if fallback is None:
            return None
        served = await self._serve_fallback(fallback, call)
        if served is not None:
            self.served[f"{call.unit}:{fallback.kind.value}"] += 1
            outcome = _outcome(fallback.kind.value, served.status_code, call.unit)
            log.info(
                "%s %s served by %s fallback (%s; request %s)",
                call.method,
                call.path,
                fallback.kind.value,
                exc.reason,
                call.request_id,
                extra=_fields(call, outcome, served.status_code),
            )
        return served

    async def _degrade(
        self, call: Call, fallback: Fallback | None, exc: UpstreamUnavailable
    ) -> Response:
        served = await self._fallback_answer(call, fallback, exc)
        if served is not None:
            return served
        self.unavailable[call.unit] += 1
        outcome = _outcome(OUTCOME_UNAVAILABLE, UnavailableError.status, call.unit)
        log.warning(
            "%s %s: %s %s, no fallback answer (request %s)",
            call.method,
            call.path,
            call.module,
            exc.reason,
            call.request_id,
            extra=_fields(call, outcome, UnavailableError.status),
        )
        raise UnavailableError(
            f"the {call.module} service is unavailable ({exc.reason})",
            retry_after=DEFAULT_RETRY_AFTER_SECONDS,
        )
