"""One module's upstream: the forward's inner steps, one method each, in this order
(``ModuleUpstream.send``; the list: :data:`gateway.forwarding.FORWARD_STEPS`):

    through_bulkhead -> with_retries -> within_deadline -> through_breaker
        -> within_timeout -> after_fault -> on_transport

Each step does one thing and calls the next (plain method calls: nothing is built per
request to chain them). The deadline covers the whole call, retries included; each attempt
checks what is left of it before the breaker and is cut off at it inside the breaker, so
the breaker counts a timed-out attempt. ``send()`` either returns the module's
answer (any 2xx-4xx: a 4xx is the module speaking, not failing) or raises one
:class:`UpstreamUnavailable` subclass, which the forwarder turns into a fallback or a
problem answer. A caller with a fallback answer to give sends ``impatient=True``: if its
call is the breaker's half-open trial, it waits only the breaker's probe patience
(:class:`ProbeRunning`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from gateway.resilience.breaker import BreakerOpenError, CircuitBreaker, ProbeStillRunningError
from gateway.resilience.bulkhead import Bulkhead, BulkheadFullError
from gateway.resilience.faults import FaultInjector, InjectedError
from gateway.resilience.retry import RETRYABLE_STATUSES, RetryBudget, RetryConfig, backoff_delay
from gateway.routing.routes import ModuleConfig

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
DEADLINE_HEADER = b"x-relay-deadline-ms"
URL_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class ModuleAnswer:
    """A module's answer, read whole: status, headers as received, body (decoded)."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    content: bytes


class UpstreamUnavailable(Exception):
    """The module could not give an answer; ``reason`` says why."""

    reason = "failed"

    def __init__(self, module: str, detail: str) -> None:
        super().__init__(f"{module}: {detail}")
        self.module = module
        self.detail = detail


class ShortCircuited(UpstreamUnavailable):
    reason = "breaker-open"


class BulkheadRejected(UpstreamUnavailable):
    reason = "bulkhead-full"


class UpstreamTimedOut(UpstreamUnavailable):
    reason = "timeout"


class UpstreamFailed(UpstreamUnavailable):
    reason = "failed"


class ProbeRunning(UpstreamUnavailable):
    """The call is the breaker's half-open trial and outlasted its caller's patience: it
    runs on and decides the breaker's state. :meth:`outcome` waits for it after all (a
    caller with no fallback answer does)."""

    reason = "half-open-probe-running"

    def __init__(self, module: str, detail: str, running: ProbeStillRunningError) -> None:
        super().__init__(module, detail)
        self.running = running

    async def outcome(self) -> ModuleAnswer:
        answer: ModuleAnswer = await self.running.outcome()
        return answer


class QueuedBehind(UpstreamUnavailable):
    """Not attempted: the caller's earlier writes are still queued, and order comes first."""

    reason = "earlier-writes-queued"


class CellMoving(UpstreamUnavailable):
    """Not attempted: the caller's partition key is being moved to another cell
    (``relay cells move``); a write waits in the deferred queue until it is placed."""

    reason = "cell-move"


class _ServerError(Exception):
    def __init__(self, response: ModuleAnswer) -> None:
        super().__init__(f"status {response.status_code}")
        self.response = response


async def _read(response: httpx.Response) -> bytes:
    """The whole body. Identity-encoded bodies (what modules send) come off the stream as
    they are, skipping httpx's decoder and chunker pipeline, which costs more than the rest
    of a response; encoded ones go through it."""
    if any(name.lower() == b"content-encoding" for name, _ in response.headers.raw):
        return await response.aread()
    try:
        return b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
    finally:
        await response.stream.aclose()  # type: ignore[union-attr]


_HOST, _CONTENT_LENGTH = b"host", b"content-length"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def module_request(
    method: str,
    url: httpx.URL,
    host: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    timeout: dict[str, float],
) -> httpx.Request:
    """The request a module gets, as ``httpx.Request(method, url, content=body,
    headers=headers)`` builds it (``Host`` first, ``Content-Length`` where a body is or a
    write has none), built from a stream instead: httpx then adds no headers of its own,
    and checking for them (its ``_prepare``, which builds the headers twice) cost a forward
    more than the rest of the request. ``headers``: lower-case names, none of them ``Host``
    or ``Content-Length`` (``forwarder.FORWARDED_REQUEST_HEADERS``)."""
    content = body or b""
    fields = [(_HOST, host), *headers]
    if content or method in _BODY_METHODS:
        fields.append((_CONTENT_LENGTH, b"%d" % len(content)))
    request = httpx.Request(
        method,
        url,
        headers=fields,
        stream=httpx.ByteStream(content),
        extensions={"timeout": timeout},
    )
    request.read()  # the content is there to read (SigV4 signs it), as with content=
    return request


def counts_as_failure(exc: BaseException) -> bool:
    """What the breaker counts: the module not answering properly. Never a 4xx."""
    return isinstance(exc, (_ServerError, httpx.TransportError, TimeoutError, InjectedError))


class ModuleUpstream:
    def __init__(
        self,
        module: ModuleConfig,
        transport: httpx.AsyncBaseTransport,
        *,
        breaker: CircuitBreaker,
        bulkhead: Bulkhead,
        budget: RetryBudget,
        retry: RetryConfig,
        faults: FaultInjector,
        auth: httpx.Auth | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        name: str | None = None,
    ) -> None:
        self.module = module
        # What this upstream is called: the module, or one of its cells ("loads/cell-1"),
        # the name of its breaker, metrics, faults and release.
        self.name = name or module.name
        self.transport = transport
        self.breaker = breaker
        self.bulkhead = bulkhead
        self.budget = budget
        self.retry = retry
        self.faults = faults
        self.auth = auth
        self.clock = clock
        self.sleep = sleep
        self.rng = rng  # the backoff's jitter (None: the random module's)
        self.base_url = module.upstream
        self._urls: dict[str, tuple[httpx.URL, bytes]] = {}

    async def send(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        *,
        retry_safe: bool,
        impatient: bool = False,
    ) -> ModuleAnswer:
        """The module's answer, through every step below; the deadline starts here.

        ``impatient``: the caller has a fallback answer, so as the half-open trial it
        waits only the probe patience (then :class:`ProbeRunning`)."""
        if impatient and self.breaker.would_probe():
            try:
                return await self.breaker.patiently(
                    self.send(method, target, request_headers, body, retry_safe=retry_safe)
                )
            except ProbeStillRunningError as exc:
                raise ProbeRunning(self.module.name, str(exc), exc) from None
        self.budget.record_request()
        deadline = self.clock() + self.module.timeout_seconds
        return await self.through_bulkhead(
            method, target, request_headers, body, deadline, retry_safe
        )

    # --- the steps, in order: each does one thing and calls the next ----------------------

    async def through_bulkhead(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
        retry_safe: bool,
    ) -> ModuleAnswer:
        """Bulkhead: the call holds one of the module's slots, every retry included; with
        none free, :class:`BulkheadRejected` at once."""
        try:
            with self.bulkhead:
                return await self.with_retries(
                    method, target, request_headers, body, deadline, retry_safe
                )
        except BulkheadFullError as exc:
            raise BulkheadRejected(self.module.name, str(exc)) from None

    async def with_retries(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
        retry_safe: bool,
    ) -> ModuleAnswer:
        """Retry: a failed attempt is made again when the request is safe to repeat, the
        failure says the module did not answer, attempts and the budget allow and the
        backoff fits before the deadline; otherwise the failure as an
        :class:`UpstreamUnavailable`. An open breaker is never retried."""
        attempt = 1
        while True:
            try:
                return await self.within_deadline(method, target, request_headers, body, deadline)
            except BreakerOpenError as exc:
                raise ShortCircuited(self.module.name, str(exc)) from None
            except (_ServerError, httpx.TransportError, TimeoutError, InjectedError) as exc:
                retryable = (
                    not isinstance(exc, _ServerError)
                    or exc.response.status_code in RETRYABLE_STATUSES
                )
                if not (retry_safe and retryable and attempt < self.retry.max_attempts):
                    raise self._unavailable(exc) from None
                delay = backoff_delay(attempt, self.retry, self.rng)
                if deadline - self.clock() <= delay or not self.budget.try_spend():
                    raise self._unavailable(exc) from None
                await self.sleep(delay)
                attempt += 1

    async def within_deadline(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
    ) -> ModuleAnswer:
        """Deadline: an attempt with no time left is not made (``TimeoutError``, before the
        breaker: the deadline running out is not the module failing)."""
        if deadline - self.clock() <= 0:
            raise TimeoutError("deadline passed")
        return await self.through_breaker(method, target, request_headers, body, deadline)

    async def through_breaker(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
    ) -> ModuleAnswer:
        """Breaker: the attempt is admitted by the module's breaker (or
        :class:`BreakerOpenError`, not attempted) and counted: a 5xx answer, a timeout, an
        unreachable module or an injected error is a failure, any other answer a success.
        Where requests alone refresh the fleet's breaker copy (Lambda), admission first
        waits for a due refresh, briefly (:meth:`FleetBreakers.refresh_if_due`)."""
        async with self.breaker.calling():
            answer = await self.within_timeout(method, target, request_headers, body, deadline)
            if answer.status_code >= 500:
                raise _ServerError(answer)
            return answer

    async def within_timeout(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
    ) -> ModuleAnswer:
        """Timeout: the attempt is cut off (``TimeoutError``) when the deadline passes, inside
        the breaker, so that the breaker counts it."""
        async with asyncio.timeout(deadline - self.clock()):
            return await self.after_fault(method, target, request_headers, body, deadline)

    async def after_fault(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        deadline: float,
    ) -> ModuleAnswer:
        """Fault: a game day's fault for the module (latency, an error, a black hole) is
        applied before the transport, which gets what is left of the deadline."""
        await self.faults.before_call(self.name)
        remaining = max(deadline - self.clock(), 0.001)
        return await self.on_transport(method, target, request_headers, body, remaining)

    async def on_transport(
        self,
        method: str,
        target: str,
        request_headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        remaining: float,
    ) -> ModuleAnswer:
        """Transport: one request on the transport itself, carrying the deadline
        (``x-relay-deadline-ms``), read whole. httpx's request and response types, without
        the client's per-request cookie jar, redirect and event-hook work."""
        connect = min(self.module.connect_timeout_seconds, remaining)
        url, host = self._url(target)
        request = module_request(
            method,
            url,
            host,
            [*request_headers, (DEADLINE_HEADER, b"%d" % (remaining * 1000))],
            body,
            {"connect": connect, "read": remaining, "write": remaining, "pool": remaining},
        )
        if self.auth is not None:
            request = next(self.auth.auth_flow(request))
        response = await self.transport.handle_async_request(request)
        return ModuleAnswer(response.status_code, response.headers.raw, await _read(response))

    def rebase(self, url: str) -> None:
        """Reach the module at ``url`` from now on (its stack published a new one, or a
        release promoted another version). The breaker starts closed there: what it
        counted was the old deployment's failures (say, calls that reached an old process
        between its stop and this instance learning of the new URL)."""
        self.base_url = url
        self._urls = {}
        self.breaker.reset(f"{self.name} is at {url} now")

    def _url(self, target: str) -> tuple[httpx.URL, bytes]:
        """Parsed URLs by target, with their ``Host`` header's value: parsing one costs more
        than the rest of building a request."""
        found = self._urls.get(target)
        if found is None:
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            url = httpx.URL(self.base_url + target)
            found = self._urls[target] = (url, url.netloc)
        return found

    def _unavailable(self, exc: BaseException) -> UpstreamUnavailable:
        name = self.module.name
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return UpstreamTimedOut(name, "did not answer in time")
        if isinstance(exc, _ServerError):
            return UpstreamFailed(name, f"answered {exc.response.status_code}")
        if isinstance(exc, InjectedError):
            return UpstreamFailed(name, "injected fault")
        return UpstreamFailed(name, f"unreachable ({type(exc).__name__})")
