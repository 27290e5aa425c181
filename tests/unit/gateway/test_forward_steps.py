"""Forward's inner steps (``gateway.forwarding.FORWARD_STEPS``), each on its own: the step
under test runs for real, the step after it is a stand-in that records what it was given."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from gateway.forwarding import FORWARD_STEPS
from gateway.forwarding.forwarder import (
    ForwardedResponse,
    Forwarder,
    fallback_call,
    idempotency_key,
    module_headers,
)
from gateway.forwarding.upstream import (
    BulkheadRejected,
    ModuleAnswer,
    ModuleUpstream,
    ProbeRunning,
    ShortCircuited,
    UpstreamFailed,
    UpstreamTimedOut,
    _ServerError,
    counts_as_failure,
    module_request,
)
from gateway.resilience.breaker import (
    BreakerConfig,
    BreakerOpenError,
    CircuitBreaker,
    ProbeStillRunningError,
)
from gateway.resilience.bulkhead import Bulkhead, BulkheadConfig
from gateway.resilience.fallbacks import Call, FallbackKind
from gateway.resilience.faults import FaultInjector, FaultKind, FaultSpec, InjectedError
from gateway.resilience.retry import BudgetConfig, RetryBudget, RetryConfig
from gateway.routing.routes import ModuleConfig, Route, Tier
from shared_contracts.errors import BadRequestError, UnavailableError
from shared_contracts.identity import IdentityContext, Role
from tests.fakes import FakeSleep, MonotonicClock, WallClock

pytestmark = pytest.mark.anyio

OK = ModuleAnswer(200, [(b"content-type", b"application/json")], b"{}")
DRIVER = IdentityContext(sub="D-1001", role=Role.DRIVER, driver_id="D-1001")
ARGS = ("GET", "/loads", [(b"accept", b"application/json")], None)


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def clock() -> MonotonicClock:
    return MonotonicClock()


def upstream(
    clock: MonotonicClock,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    max_concurrent: int = 4,
    max_attempts: int = 3,
    fail_max: int = 5,
    faults: FaultInjector | None = None,
    rng: random.Random | None = None,
) -> ModuleUpstream:
    return ModuleUpstream(
        ModuleConfig(
            name="loads",
            tier=Tier.CRITICAL,
            upstream="http://loads.test",
            retry=RetryConfig(max_attempts=max_attempts),
        ),
        transport or httpx.MockTransport(lambda request: httpx.Response(200)),
        breaker=CircuitBreaker(
            "loads", BreakerConfig(fail_max=fail_max), is_failure=counts_as_failure, clock=clock
        ),
        bulkhead=Bulkhead("loads", BulkheadConfig(max_concurrent=max_concurrent)),
        budget=RetryBudget(BudgetConfig(), clock=clock),
        retry=RetryConfig(max_attempts=max_attempts),
        faults=faults or FaultInjector(clock=WallClock()),
        clock=clock,
        sleep=FakeSleep(clock),
        rng=rng,
    )


class Next:
    """A stand-in for the next step: answers from ``outcomes`` in turn (an exception is
    raised), recording the arguments of each call."""

    def __init__(self, *outcomes: Any, during: Any = None) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[Any, ...]] = []
        self.during = during

    async def __call__(self, *args: Any) -> ModuleAnswer:
        self.calls.append(args)
        if self.during is not None:
            self.during()
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


# --- the list and the order the steps run in ------------------------------------------


async def test_send_runs_the_listed_steps_in_their_order(clock):
    up = upstream(clock)
    ran: list[str] = []
    listed = [code.rsplit(".", 1)[1] for _, code in FORWARD_STEPS if code.startswith("upstream.")]
    for name in listed:
        step = getattr(up, name)

        async def recorded(*args: Any, _name: str = name, _step: Any = step) -> Any:
            ran.append(_name)
            return await _step(*args)

        setattr(up, name, recorded)
    answer = await up.send(*ARGS, retry_safe=True)
    assert answer.status_code == 200
    assert ran == listed


# --- bulkhead ---------------------------------------------------------------------------


async def test_bulkhead_holds_a_slot_while_the_call_runs_and_frees_it_after(clock):
    up = upstream(clock)
    held = []
    up.with_retries = Next(OK, during=lambda: held.append(up.bulkhead.in_flight))
    assert await up.through_bulkhead(*ARGS, clock() + 2, True) is OK
    assert held == [1]
    assert up.bulkhead.in_flight == 0


async def test_a_full_bulkhead_refuses_without_calling_on(clock):
    up = upstream(clock, max_concurrent=1)
    up.with_retries = after = Next(OK)
    with up.bulkhead, pytest.raises(BulkheadRejected):
        await up.through_bulkhead(*ARGS, clock() + 2, True)
    assert after.calls == []


# --- retry ------------------------------------------------------------------------------


async def test_a_safe_request_is_retried_after_a_timeout_with_backoff(clock):
    up = upstream(clock)
    up.within_deadline = after = Next(TimeoutError(), OK)
    assert await up.with_retries(*ARGS, clock() + 2, True) is OK
    assert len(after.calls) == 2
    assert len(up.sleep.slept) == 1 and up.sleep.slept[0] > 0


async def test_an_unsafe_request_is_not_retried(clock):
    up = upstream(clock)
    up.within_deadline = after = Next(TimeoutError(), OK)
    with pytest.raises(UpstreamTimedOut):
        await up.with_retries(*ARGS, clock() + 2, False)
    assert len(after.calls) == 1


async def test_a_500_is_not_retried_and_a_503_is(clock):
    up = upstream(clock)
    up.within_deadline = after = Next(_ServerError(ModuleAnswer(500, [], b"")))
    with pytest.raises(UpstreamFailed, match="answered 500"):
        await up.with_retries(*ARGS, clock() + 2, True)
    assert len(after.calls) == 1
    up.within_deadline = after = Next(_ServerError(ModuleAnswer(503, [], b"")), OK)
    assert await up.with_retries(*ARGS, clock() + 2, True) is OK
    assert len(after.calls) == 2


async def test_an_open_breaker_is_never_retried(clock):
    up = upstream(clock)
    up.within_deadline = after = Next(BreakerOpenError("loads", "open"), OK)
    with pytest.raises(ShortCircuited):
        await up.with_retries(*ARGS, clock() + 2, True)
    assert len(after.calls) == 1


class LargestJitter(random.Random):
    """Full jitter that always draws its largest delay (it could draw one under 1 ms)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_no_retry_when_the_backoff_does_not_fit_before_the_deadline(clock):
    up = upstream(clock, rng=LargestJitter())
    up.within_deadline = after = Next(TimeoutError(), OK)
    with pytest.raises(UpstreamTimedOut):
        await up.with_retries(*ARGS, clock() + 0.001, True)
    assert len(after.calls) == 1
    assert up.sleep.slept == []


async def test_attempts_stop_at_max_attempts(clock):
    up = upstream(clock, max_attempts=2)
    up.within_deadline = after = Next(TimeoutError())
    with pytest.raises(UpstreamTimedOut):
        await up.with_retries(*ARGS, clock() + 10, True)
    assert len(after.calls) == 2


# --- deadline ---------------------------------------------------------------------------


async def test_no_attempt_once_the_deadline_has_passed(clock):
    up = upstream(clock)
    up.through_breaker = after = Next(OK)
    deadline = clock() + 1
    clock.advance(1)
    with pytest.raises(TimeoutError):
        await up.within_deadline(*ARGS, deadline)
    assert after.calls == []
    assert up.breaker.calls == 0


async def test_an_attempt_with_time_left_goes_on_with_the_deadline(clock):
    up = upstream(clock)
    up.through_breaker = after = Next(OK)
    deadline = clock() + 1
    assert await up.within_deadline(*ARGS, deadline) is OK
    assert after.calls == [(*ARGS, deadline)]


# --- breaker ----------------------------------------------------------------------------


async def test_the_breaker_counts_a_5xx_answer_as_a_failure(clock):
    up = upstream(clock)
    up.within_timeout = Next(ModuleAnswer(502, [], b""))
    with pytest.raises(_ServerError):
        await up.through_breaker(*ARGS, clock() + 1)
    assert (up.breaker.calls, up.breaker.failures) == (1, 1)


async def test_the_breaker_passes_a_4xx_as_an_answer(clock):
    up = upstream(clock)
    not_found = ModuleAnswer(404, [], b"")
    up.within_timeout = Next(not_found)
    assert await up.through_breaker(*ARGS, clock() + 1) is not_found
    assert (up.breaker.calls, up.breaker.failures) == (1, 0)


async def test_an_open_breaker_refuses_without_calling_on(clock):
    up = upstream(clock, fail_max=1)
    up.within_timeout = after = Next(TimeoutError())
    with pytest.raises(TimeoutError):
        await up.through_breaker(*ARGS, clock() + 1)
    with pytest.raises(BreakerOpenError):
        await up.through_breaker(*ARGS, clock() + 1)
    assert len(after.calls) == 1


# --- timeout ----------------------------------------------------------------------------


async def test_the_attempt_is_cut_off_at_the_deadline(clock):
    up = upstream(clock)
    never = asyncio.Event()

    async def silent(*args: Any) -> ModuleAnswer:
        await never.wait()
        raise AssertionError("unreachable")

    up.after_fault = silent
    with pytest.raises(TimeoutError):
        await up.within_timeout(*ARGS, clock())  # nothing left of the deadline


async def test_an_attempt_within_the_deadline_answers(clock):
    up = upstream(clock)
    up.after_fault = Next(OK)
    assert await up.within_timeout(*ARGS, clock() + 1) is OK


# --- fault ------------------------------------------------------------------------------


async def test_an_injected_error_stops_the_attempt_before_the_transport(clock):
    faults = FaultInjector(clock=WallClock())
    faults.set("loads", FaultSpec(kind=FaultKind.ERROR), "ops-1")
    up = upstream(clock, faults=faults)
    up.on_transport = after = Next(OK)
    with pytest.raises(InjectedError):
        await up.after_fault(*ARGS, clock() + 1)
    assert after.calls == []


async def test_the_transport_gets_what_is_left_of_the_deadline_after_the_fault(clock):
    faults = FaultInjector(clock=WallClock(), sleep=FakeSleep(clock))
    faults.set("loads", FaultSpec(kind=FaultKind.LATENCY, latency_ms=300), "ops-1")
    up = upstream(clock, faults=faults)
    up.on_transport = after = Next(OK)
    assert await up.after_fault(*ARGS, clock() + 1) is OK
    assert after.calls[0][4] == pytest.approx(0.7)


# --- transport --------------------------------------------------------------------------


async def test_the_transport_sends_the_request_with_its_deadline(clock):
    seen: list[httpx.Request] = []

    def module(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={"etag": '"1"'}, content=b'{"ok":true}')

    up = upstream(clock, httpx.MockTransport(module))
    answer = await up.on_transport("POST", "/loads/L-1/events?x=1", [], b'{"a":1}', 0.25)
    assert (answer.status_code, answer.content) == (201, b'{"ok":true}')
    assert (b"etag", b'"1"') in answer.headers
    request = seen[0]
    assert str(request.url) == "http://loads.test/loads/L-1/events?x=1"
    assert request.headers["x-relay-deadline-ms"] == "250"
    assert request.extensions["timeout"]["read"] == 0.25
    assert request.content == b'{"a":1}'


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", b'{"a":1}'), ("POST", None), ("DELETE", b"x"), ("PUT", None)],
)
def test_the_modules_request_is_the_one_httpx_builds_from_content(method: str, body: bytes | None):
    url = httpx.URL("http://loads.test:8080/loads?x=1")
    headers = [(b"accept", b"application/json"), (b"x-request-id", b"r-1")]
    timeout = {"connect": 0.5, "read": 2.0, "write": 2.0, "pool": 2.0}
    made = module_request(method, url, url.netloc, headers, body, timeout)
    usual = httpx.Request(
        method, url, content=body, headers=headers, extensions={"timeout": timeout}
    )
    assert (made.method, made.url, made.extensions) == (usual.method, usual.url, usual.extensions)
    # the same fields (httpx puts the content length after the caller's, or first when it
    # adds a write's 0; the order of different fields carries no meaning)
    assert sorted(made.headers.multi_items()) == sorted(usual.headers.multi_items())
    assert made.headers.raw[0] == (b"host", b"loads.test:8080")
    assert made.content == usual.content == (body or b"")


# --- choose upstream: the request as the module gets it ---------------------------------


def test_a_write_gets_an_idempotency_key_and_a_read_keeps_the_clients():
    made = idempotency_key(None, True)
    assert made is not None and made.startswith("gw-") and len(made) == 35
    assert idempotency_key(None, False) is None
    assert idempotency_key(b"client-key-1", False) == "client-key-1"
    with pytest.raises(BadRequestError) as exc:
        idempotency_key(b"bad key!", True)
    assert exc.value.code == "invalid-idempotency-key"


def test_a_module_gets_only_the_headers_that_pass_and_the_gateways_own():
    hdrs = {
        b"accept": b"application/json",
        b"cookie": b"session=1",
        b"x-relay-identity": b"forged",
        b"user-agent": b"app/1",
    }
    read = module_headers(hdrs, "req-1", b"signed", None, None)
    assert read == [
        (b"accept", b"application/json"),
        (b"user-agent", b"app/1"),
        (b"x-request-id", b"req-1"),
        (b"x-relay-identity", b"signed"),
    ]
    write = dict(module_headers(hdrs, "req-1", None, "key-12345", 0.0))
    assert write[b"idempotency-key"] == b"key-12345"
    assert write[b"x-relay-accepted-at"] == b"1970-01-01T00:00:00+00:00"
    assert b"x-relay-identity" not in write


class FakeSigner:
    def get(self) -> FakeSigner:
        return self

    def sign(self, identity: IdentityContext, *, audience: str, cells: object = None) -> str:
        return f"{identity.sub}@{audience}"


class FakeUpstream:
    def __init__(self, name: str, outcome: Any = OK) -> None:
        self.name, self.outcome = name, outcome
        self.sent: list[tuple[Any, ...]] = []

    async def send(self, *args: Any, **kw: Any) -> ModuleAnswer:
        self.sent.append((*args, kw))
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


class FakeFallback:
    kind = FallbackKind.LAST_KNOWN_GOOD

    def __init__(self, answer: Response | None = None) -> None:
        self.answer = answer
        self.remembered: list[tuple[Any, ...]] = []

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        self.remembered.append((call.path, status, body, content_type))

    async def serve(self, call: Call) -> Response | None:
        return self.answer


def forwarder(upstreams: dict[str, Any], fallbacks: dict[str, Any] | None = None) -> Forwarder:
    return Forwarder(upstreams, fallbacks or {}, FakeSigner(), wall_clock=WallClock())


def scope(method: str = "GET", path: str = "/loads", query: bytes = b"") -> dict[str, Any]:
    return {"method": method, "path": path, "raw_path": path.encode(), "query_string": query}


async def no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def test_forward_chooses_the_routes_module_and_signs_for_it():
    loads, navigate = FakeUpstream("loads"), FakeUpstream("navigate")
    fw = forwarder({"loads": loads, "navigate": navigate})
    route = Route(prefix="/navigate", module="navigate", roles=frozenset({Role.DRIVER}))
    response = await fw.forward(
        scope(path="/navigate", query=b"load_id=L-1"), no_body, {}, route, DRIVER, "req-1"
    )
    assert response.status_code == 200
    assert loads.sent == []
    method, target, out, body, kw = navigate.sent[0]
    assert (method, target, body) == ("GET", "/navigate?load_id=L-1", None)
    assert (b"x-relay-identity", b"D-1001@navigate") in out
    assert kw == {"retry_safe": True, "impatient": False}


def test_the_call_a_fallback_sees():
    call = fallback_call(
        scope("POST", "/message", b"a=1"),
        "message",
        b"{}",
        DRIVER,
        "key-12345",
        "req-1",
        [(b"accept", b"*/*"), (b"user-agent", b"app"), (b"content-type", b"application/json")],
        12.5,
    )
    assert (call.module, call.method, call.path, call.query) == (
        "message",
        "POST",
        "/message",
        "a=1",
    )
    assert call.forwarded_headers == {"accept": "*/*", "content-type": "application/json"}
    assert (call.idempotency_key, call.accepted_at, call.request_id) == ("key-12345", 12.5, "req-1")


def test_respond_picks_the_modules_headers_and_feeds_the_fallback():
    fallback = FakeFallback()
    answer = ModuleAnswer(
        307,
        [
            (b"Location", b"http://loads.internal:9000/loads/L-1?x=1"),
            (b"Set-Cookie", b"s=1"),
            (b"ETag", b'"7"'),
        ],
        b"[]",
    )
    call = Call(module="loads", method="GET", path="/loads", query="", body=b"", identity=None)
    response = forwarder({}).respond(call, fallback, answer)
    assert isinstance(response, ForwardedResponse)
    assert response.raw_headers == [
        (b"location", b"/loads/L-1?x=1"),
        (b"etag", b'"7"'),
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
    ]
    assert fallback.remembered == [("/loads", 307, b"[]", "application/json")]


# --- the probe and the fallback --------------------------------------------------------


def probe_running() -> ProbeRunning:
    trial = asyncio.get_running_loop().create_future()
    trial.set_result(OK)
    return ProbeRunning("loads", "probe running", ProbeStillRunningError("loads", trial))


async def test_a_caller_with_a_fallback_does_not_wait_on_the_half_open_trial():
    served = Response(b"cached", status_code=200)
    fw = forwarder({"loads": FakeUpstream("loads", probe_running())})
    call = Call(module="loads", method="GET", path="/loads", query="", body=b"", identity=None)
    answer = await fw.ask(fw.upstreams["loads"], scope(), call, [], FakeFallback(served))
    assert answer is served
    # with no fallback answer, the trial's outcome after all
    answer = await fw.ask(fw.upstreams["loads"], scope(), call, [], FakeFallback(None))
    assert answer is OK


async def test_the_fallback_answers_when_the_module_cannot():
    served = Response(b"cached", status_code=200)
    route = Route(
        prefix="/loads", module="loads", roles=frozenset({Role.DRIVER}), fallback={"GET": "lkg"}
    )
    fw = forwarder(
        {"loads": FakeUpstream("loads", UpstreamTimedOut("loads", "slow"))},
        {"lkg": FakeFallback(served)},
    )
    assert await fw.forward(scope(), no_body, {}, route, DRIVER, "req-1") is served
    assert fw.served == {"loads:last-known-good": 1}


async def test_no_fallback_is_503_with_retry_after():
    route = Route(prefix="/loads", module="loads", roles=frozenset({Role.DRIVER}))
    fw = forwarder({"loads": FakeUpstream("loads", UpstreamTimedOut("loads", "slow"))})
    with pytest.raises(UnavailableError) as exc:
        await fw.forward(scope(), no_body, {}, route, DRIVER, "req-1")
    assert exc.value.status == 503
    assert exc.value.headers == {"Retry-After": "5"}
    assert fw.unavailable == {"loads": 1}


def test_a_rebased_upstream_starts_with_its_breaker_closed():
    # The failures it counted were the old deployment's (a stack replaced, a version
    # promoted): at the new URL the module gets its own chance.
    from gateway.forwarding.upstream import ModuleUpstream
    from gateway.resilience.breaker import BreakerState, CircuitBreaker
    from gateway.resilience.bulkhead import Bulkhead
    from gateway.resilience.faults import FaultInjector
    from gateway.resilience.retry import RetryBudget
    from gateway.routing.routes import ModuleConfig, Tier

    config = ModuleConfig(name="loads", tier=Tier.CRITICAL, upstream="http://old.test")
    upstream = ModuleUpstream(
        config,
        httpx.MockTransport(lambda request: httpx.Response(200)),
        breaker=CircuitBreaker("loads", config.breaker),
        bulkhead=Bulkhead("loads", config.bulkhead),
        budget=RetryBudget(config.retry_budget),
        retry=config.retry,
        faults=FaultInjector(),
    )
    upstream.breaker.follow_open("the old process is gone")
    upstream.rebase("http://new.test")
    assert upstream.base_url == "http://new.test"
    assert upstream.breaker.state is BreakerState.CLOSED
