"""The synthetic load a game day runs while its fault is in force: bounded, loopback only.

A few drivers poll their loads and gate passes, report trip events, ask for directions and
message dispatch; a dispatcher assigns loads; a gate verifies passes. Every call is
recorded with its function and outcome (:mod:`relay.gameday.outcome`). Writes carry an
``Idempotency-Key``; a write without an answer is sent again with the same key (what the
app does), and some answered writes are sent a second time on purpose (a duplicate
delivery), so that "nothing twice" is tested, not assumed.

After the fault is undone, :meth:`SyntheticLoad.settle` waits until every function answers
live again, finishes the writes still unanswered, and checks through the API that every
answered write was applied exactly once: each trip load's version (1 + its events), each
202's status URL, each message in the driver's inbox.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from relay import demo
from shared_contracts.identity import Role

from .outcome import Call, Function, Outcome, classify
from .target import Target

DRIVERS = tuple(demo.DRIVERS)
TRIP_ROUTE = ["F-CHI", "F-IND", "F-CMH", "F-DET"]  # 4 stops: 8 events per trip
PASS_ROUTE = ["F-IND", "F-CHI"]
DEFAULT_SECONDS = 20.0
DEFAULT_ROUND_SECONDS = 1.0  # each driver's pace: a round of calls a second
DEFAULT_MAX_CALLS = 5000  # all threads together
DEFAULT_CALL_TIMEOUT_SECONDS = 5.0  # no answer within this: failed
DEFAULT_SETTLE_SECONDS = 60.0
DUPLICATE_EVERY = 3  # the 1st, 4th, 7th ... answered event of a trip is delivered twice
# A write answered 503 is sent again with its key after Retry-After, as the app does:
WRITE_RETRIES = 4
MAX_RETRY_WAIT_SECONDS = 5.0


def trip_events(stops: int) -> list[tuple[str, int]]:
    """Every event of a trip over ``stops`` stops, in order."""
    out: list[tuple[str, int]] = []
    for seq in range(1, stops + 1):
        out.append(("arrived", seq))
        out.append(("delivered", seq) if seq == stops else ("departed", seq))
    return out


@dataclass(frozen=True)
class LoadConfig:
    drivers: tuple[str, ...] = DRIVERS
    seconds: float = DEFAULT_SECONDS
    round_seconds: float = DEFAULT_ROUND_SECONDS
    max_calls: int = DEFAULT_MAX_CALLS
    call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS
    settle_seconds: float = DEFAULT_SETTLE_SECONDS

    def __post_init__(self) -> None:
        if not self.drivers:
            raise ValueError("a load needs at least one driver")
        if self.seconds <= 0 or self.round_seconds <= 0 or self.max_calls < 1:
            raise ValueError("seconds, round_seconds and max_calls must be positive")

    @property
    def trips(self) -> int:
        """Trip loads per driver: enough for one event a round, and one more trip (the load
        also runs while the fault is set up and undone)."""
        rounds = self.seconds / self.round_seconds
        return int(rounds // len(trip_events(len(TRIP_ROUTE)))) + 2


@dataclass
class Write:
    """One write the load made, by its key: the first answer and its later checks."""

    key: str
    function: Function
    detail: str  # "L-GD..-1 arrived 1", a message body ...
    answered: bool = False
    status: int | None = None
    tracking_url: str | None = None  # a 202's status URL
    result: dict[str, Any] = field(default_factory=dict)
    duplicates: int = 0
    duplicate_mismatch: int = 0  # a duplicate answered differently


@dataclass
class WriteCheck:
    """After recovery: were the answered writes applied, each exactly once?"""

    answered: int = 0
    applied: int = 0
    duplicates: int = 0
    lost: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "answered": self.answered,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "lost": self.lost,
            "twice": self.twice,
            "unanswered": self.unanswered,
        }


@dataclass
class Trip:
    load_id: str
    events: list[tuple[str, int]]
    next: int = 0  # index of the next event to send
    keys: list[str] = field(default_factory=list)  # the answered events' keys


class SyntheticLoad:
    """Drivers, a dispatcher and a gate against the stack's gateway, on threads."""

    def __init__(
        self,
        target: Target,
        config: LoadConfig | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.config = config or LoadConfig()
        self.transport = transport
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:8]
        self.calls: list[Call] = []
        self.writes: dict[str, Write] = {}
        self.trips: dict[str, list[Trip]] = {d: [] for d in self.config.drivers}
        self.passes: dict[str, dict[str, Any]] = {}  # driver -> a pass issued at set-up
        self.pass_loads: dict[str, str] = {}
        self.messages: dict[str, list[str]] = {d: [] for d in self.config.drivers}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at: float | None = None
        self.recovery_seconds: float | None = None

    # --- plumbing ------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.target.gateway_url,
            timeout=self.config.call_timeout_seconds,
            transport=self.transport,
        )

    def _call(
        self,
        client: httpx.Client,
        function: Function | None,
        method: str,
        path: str,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One request; recorded under ``function`` (None: set-up and checks, not counted).

        A write with an ``Idempotency-Key`` answered 503 is sent again with the same key
        after its ``Retry-After`` (at most :data:`WRITE_RETRIES` times), as the app does
        (docs/mobile.md): the call is recorded once, with its last answer and its whole
        time."""
        started = self.clock()
        response: httpx.Response | None = None
        error = ""
        retries = WRITE_RETRIES if "idempotency-key" in headers else 0
        while True:
            try:
                response = client.request(method, path, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            if retries == 0 or response is None or response.status_code != 503:
                break
            retries -= 1
            wait = _retry_after(response)
            if wait is None:
                break
            # not cut short when the load stops: a write the app was told to retry is retried
            time.sleep(min(wait, MAX_RETRY_WAIT_SECONDS))
        detail = ""
        if response is not None and response.status_code >= 300:
            error, detail = _problem(response)
        if function is not None:
            status = response.status_code if response is not None else None
            call = Call(
                function,
                status,
                classify(status, response.headers if response is not None else None),
                round(self.clock() - started, 4),
                error,
                detail,
            )
            with self._lock:
                self.calls.append(call)
        return response

    def _budget_left(self) -> bool:
        with self._lock:
            return len(self.calls) < self.config.max_calls

    def _running(self) -> bool:
        assert self._started_at is not None
        # the load ends when told (stop), at its budget of calls, or at a hard deadline
        deadline = self._started_at + self.config.seconds * 3 + self.config.settle_seconds
        return not self._stop.is_set() and self._budget_left() and self.clock() < deadline

    def _key(self, *parts: object) -> str:
        return "gd-" + "-".join([self.run_id, *(str(p) for p in parts)])

    # --- set-up: fresh loads and passes, and caches warmed by live answers -------------

    def setup(self) -> None:
        now = datetime.now(UTC)
        dispatch = self.target.auth(Role.DISPATCH)
        with self._client() as client:
            # as a gate does: the public keys, to verify passes offline
            r = self._call(client, None, "GET", "/gatepass/keys", {})
            if r is None or r.status_code != 200:
                raise RuntimeError(f"set-up: GET /gatepass/keys: {_said(r)}")
            for k, driver in enumerate(self.config.drivers):
                for t in range(self.config.trips):
                    load_id = f"L-GD{self.run_id}{k}{t}".upper()
                    self._assign(client, dispatch, load_id, driver, TRIP_ROUTE, now, None)
                    self.trips[driver].append(Trip(load_id, trip_events(len(TRIP_ROUTE))))
                pass_load = f"L-GD{self.run_id}{k}P".upper()
                self._assign(client, dispatch, pass_load, driver, PASS_ROUTE, now, None)
                self.pass_loads[driver] = pass_load
                auth = self.target.auth(Role.DRIVER, driver)
                r = self._call(
                    client,
                    None,
                    "POST",
                    "/gatepass",
                    {**auth, "idempotency-key": self._key(driver, "pass")},
                    json={"load_id": pass_load, "facility_id": PASS_ROUTE[0]},
                )
                if r is None or r.status_code != 201:
                    raise RuntimeError(f"set-up: no gate pass for {driver}: {_said(r)}")
                self.passes[driver] = r.json()
                # the gateway's last-known-good copies: one live answer of each read
                for path in ("/loads", "/gatepass", "/message?limit=5", self._navigate(driver)):
                    r = self._call(client, None, "GET", path, auth)
                    if r is None or r.status_code != 200:
                        raise RuntimeError(f"set-up: GET {path} for {driver}: {_said(r)}")

    def _assign(
        self,
        client: httpx.Client,
        dispatch: dict[str, str],
        load_id: str,
        driver: str,
        route: list[str],
        now: datetime,
        function: Function | None,
    ) -> httpx.Response | None:
        # windows open now: a pass for the first stop is valid at the gate today
        command = demo.assignment(load_id, driver, route, now, timedelta(minutes=-30))
        r = self._call(
            client,
            function,
            "POST",
            "/dispatch/assignments",
            {**dispatch, "idempotency-key": self._key("assign", load_id)},
            json=command.model_dump(mode="json"),
        )
        if function is None and (r is None or r.status_code != 201):
            raise RuntimeError(f"set-up: assigning {load_id}: {_said(r)}")
        return r

    def _navigate(self, driver: str) -> str:
        """Directions for the trip under way (a delivered load has no next stop)."""
        trip = next((t for t in self.trips[driver] if t.next < len(t.events) - 1), None)
        load_id = trip.load_id if trip is not None else self.pass_loads[driver]
        return f"/navigate?load_id={load_id}&lat=41.88&lon=-87.63"

    # --- the load ----------------------------------------------------------------------

    def start(self) -> None:
        self._started_at = self.clock()
        self._stop.clear()
        workers: list[tuple[str, Callable[..., None], tuple[Any, ...]]] = [
            (f"driver-{d}", self._driver, (d,)) for d in self.config.drivers
        ]
        workers += [("dispatcher", self._dispatcher, ()), ("gate", self._gate, ())]
        for name, target, args in workers:
            thread = threading.Thread(target=target, args=args, name=f"gameday-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.config.call_timeout_seconds * 4)
        self._threads = []

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _driver(self, driver: str) -> None:
        auth = self.target.auth(Role.DRIVER, driver)
        with self._client() as client:
            n = 0
            while self._running():
                n += 1
                self._call(client, Function.LOADS_READ, "GET", "/loads", auth)
                self._next_event(client, driver, auth)
                self._call(client, Function.GATEPASS, "GET", "/gatepass", auth)
                if n % 4 == 0:  # the same issue again: the same pass (one key)
                    self._issue_again(client, driver, auth)
                self._call(client, Function.NAVIGATE, "GET", self._navigate(driver), auth)
                if n % 2 == 0:
                    self._message(client, driver, auth, n)
                else:
                    self._call(client, Function.MESSAGE, "GET", "/message?limit=5", auth)
                self._stop.wait(self.config.round_seconds)

    def _next_event(self, client: httpx.Client, driver: str, auth: dict[str, str]) -> None:
        trip = next((t for t in self.trips[driver] if t.next < len(t.events)), None)
        if trip is None:
            return
        kind, stop_seq = trip.events[trip.next]
        key = self._key(trip.load_id, trip.next)
        write = self.writes.setdefault(
            key, Write(key, Function.EVENT_WRITE, f"{trip.load_id} {kind} {stop_seq}")
        )
        if self._write(client, write, f"/loads/{trip.load_id}/events", auth, kind, stop_seq):
            trip.keys.append(key)
            trip.next += 1
            if len(trip.keys) % DUPLICATE_EVERY == 1:  # the same event delivered twice
                self._write(client, write, f"/loads/{trip.load_id}/events", auth, kind, stop_seq)

    def _write(
        self,
        client: httpx.Client,
        write: Write,
        path: str,
        auth: dict[str, str],
        kind: str,
        stop_seq: int,
    ) -> bool:
        """Send ``write`` (again, if it was answered: a duplicate); whether it is answered."""
        body = {"kind": kind, "stop_seq": stop_seq}
        r = self._call(
            client,
            write.function,
            "POST",
            path,
            {**auth, "idempotency-key": write.key},
            json=body,
        )
        return self._answered(write, r)

    def _answered(self, write: Write, r: httpx.Response | None) -> bool:
        if r is None or classify(r.status_code, r.headers) is Outcome.FAILED:
            return False
        data = r.json() if r.content else {}
        if write.answered:
            write.duplicates += 1
            same_kind = r.status_code == write.status and r.status_code != 202
            if same_kind and _identity(data) != _identity(write.result):
                write.duplicate_mismatch += 1
            return True
        write.answered, write.status, write.result = True, r.status_code, data
        if r.status_code == 202:
            write.tracking_url = data.get("status_url")
        return True

    def _issue_again(self, client: httpx.Client, driver: str, auth: dict[str, str]) -> None:
        r = self._call(
            client,
            Function.GATEPASS,
            "POST",
            "/gatepass",
            {**auth, "idempotency-key": self._key(driver, "pass")},
            json={"load_id": self.pass_loads[driver], "facility_id": PASS_ROUTE[0]},
        )
        if r is not None and r.status_code in (200, 201):
            key = self._key(driver, "pass")
            write = self.writes.setdefault(
                key,
                Write(key, Function.GATEPASS, f"pass for {self.pass_loads[driver]}", True, 201),
            )
            write.result = write.result or {"pass_id": self.passes[driver]["pass_id"]}
            write.duplicates += 1
            if r.json().get("pass_id") != self.passes[driver]["pass_id"]:
                write.duplicate_mismatch += 1

    def _message(self, client: httpx.Client, driver: str, auth: dict[str, str], n: int) -> None:
        pending = [k for k in self.messages[driver] if not self.writes[k].answered]
        key = pending[0] if pending else self._key(driver, "msg", n)
        if not pending:
            body = f"game day {self.run_id}: {driver} message {n}"
            self.writes[key] = Write(key, Function.MESSAGE, body)
            self.messages[driver].append(key)
        write = self.writes[key]
        r = self._call(
            client,
            Function.MESSAGE,
            "POST",
            "/message",
            {**auth, "idempotency-key": key},
            json={"body": write.detail},
        )
        self._answered(write, r)

    def _dispatcher(self) -> None:
        dispatch = self.target.auth(Role.DISPATCH)
        with self._client() as client:
            k = 0
            while self._running():
                driver = self.config.drivers[k % len(self.config.drivers)]
                load_id = f"L-GD{self.run_id}A{k}".upper()
                self._assign(
                    client,
                    dispatch,
                    load_id,
                    driver,
                    PASS_ROUTE,
                    datetime.now(UTC),
                    Function.ASSIGN,
                )
                k += 1
                self._stop.wait(self.config.round_seconds * 4)

    def _gate(self) -> None:
        gate = self.target.auth(Role.GATE)
        with self._client() as client:
            k = 0
            while self._running():
                issued = self.passes[self.config.drivers[k % len(self.config.drivers)]]
                self._call(
                    client,
                    Function.GATEPASS_VERIFY,
                    "POST",
                    "/gatepass/verify",
                    gate,
                    json={"token": issued["token"], "facility_id": issued["facility_id"]},
                )
                k += 1
                self._stop.wait(self.config.round_seconds)

    # --- after recovery --------------------------------------------------------------

    def settle(self) -> WriteCheck:
        """Wait for every function to answer live, finish unanswered writes, check them."""
        started = self.clock()
        deadline = started + self.config.settle_seconds
        with self._client() as client:
            while not self._all_live(client):
                if self.clock() >= deadline:
                    break
                time.sleep(0.5)
            else:
                self.recovery_seconds = round(self.clock() - started, 1)
            self._finish_writes(client, deadline)
            return self._check(client, deadline)

    def _all_live(self, client: httpx.Client) -> bool:
        driver = self.config.drivers[0]
        auth = self.target.auth(Role.DRIVER, driver)
        issued = self.passes[driver]
        checks = [
            ("GET", "/loads", auth, None),
            ("GET", "/gatepass", auth, None),
            ("GET", self._navigate(driver), auth, None),
            ("GET", "/message?limit=5", auth, None),
            (
                "POST",
                "/gatepass/verify",
                self.target.auth(Role.GATE),
                {"token": issued["token"], "facility_id": issued["facility_id"]},
            ),
        ]
        for method, path, headers, body in checks:
            r = self._call(client, None, method, path, headers, json=body)
            if r is None or classify(r.status_code, r.headers) is not Outcome.LIVE:
                return False
        return True

    def _finish_writes(self, client: httpx.Client, deadline: float) -> None:
        """What the app does after an outage: send unanswered writes again, same key."""
        for driver in self.config.drivers:
            auth = self.target.auth(Role.DRIVER, driver)
            for trip in self.trips[driver]:
                if trip.next >= len(trip.events):
                    continue
                key = self._key(trip.load_id, trip.next)
                write = self.writes.get(key)
                if write is None or write.answered:
                    continue
                kind, stop_seq = trip.events[trip.next]
                while not write.answered and self.clock() < deadline:
                    path = f"/loads/{trip.load_id}/events"
                    body = {"kind": kind, "stop_seq": stop_seq}
                    r = self._call(
                        client, None, "POST", path, {**auth, "idempotency-key": key}, json=body
                    )
                    if self._answered(write, r):
                        trip.keys.append(key)
                        trip.next += 1
                    else:
                        time.sleep(0.5)
            for key in self.messages[driver]:
                write = self.writes[key]
                while not write.answered and self.clock() < deadline:
                    r = self._call(
                        client,
                        None,
                        "POST",
                        "/message",
                        {**auth, "idempotency-key": key},
                        json={"body": write.detail},
                    )
                    if not self._answered(write, r):
                        time.sleep(0.5)

    def _check(self, client: httpx.Client, deadline: float) -> WriteCheck:
        check = WriteCheck()
        answered = [w for w in self.writes.values() if w.answered]
        check.answered = len(answered)
        check.duplicates = sum(w.duplicates for w in self.writes.values())
        check.unanswered = [w.detail for w in self.writes.values() if not w.answered]
        check.twice += [
            f"{w.detail}: a duplicate answered differently"
            for w in self.writes.values()
            if w.duplicate_mismatch
        ]
        # every 202 applied (its status URL), not refused
        for w in answered:
            if w.tracking_url:
                state = self._poll_state(client, w, deadline)
                if state != "applied":
                    check.lost.append(f"{w.detail}: deferred write {state}")
        # each trip load's version: 1 + its answered events (more: applied twice)
        for driver in self.config.drivers:
            auth = self.target.auth(Role.DRIVER, driver)
            for trip in self.trips[driver]:
                version = self._poll_version(client, trip, auth, deadline)
                expected = 1 + len(trip.keys)
                applied = (version or 1) - 1
                check.applied += min(applied, len(trip.keys))
                if version is None:
                    check.lost.append(f"{trip.load_id}: not readable after recovery")
                elif applied < len(trip.keys):
                    check.lost.append(f"{trip.load_id}: {applied} of {len(trip.keys)} applied")
                elif version > expected:
                    check.twice.append(f"{trip.load_id}: version {version}, {expected} expected")
            inbox = self._inbox(client, auth, driver)
            for key in self.messages[driver]:
                write = self.writes[key]
                if not write.answered:
                    continue
                seen = inbox.count(write.detail)
                check.applied += min(seen, 1)
                if seen == 0:
                    check.lost.append(f"{driver}: message {write.detail!r} not in the inbox")
                elif seen > 1:
                    check.twice.append(f"{driver}: message {write.detail!r} {seen} times")
        # a pass issued again under its key answered with the same pass (counted as applied)
        check.applied += sum(1 for w in answered if w.function is Function.GATEPASS)
        return check

    def _poll_state(self, client: httpx.Client, write: Write, deadline: float) -> str:
        auth = self.target.auth(Role.DRIVER, self._driver_of(write))
        state = "unknown"
        while True:
            r = self._call(client, None, "GET", str(write.tracking_url), auth)
            if r is not None and r.status_code == 200:
                state = str(r.json().get("state"))
                if state != "pending":
                    return state
            if self.clock() >= deadline:
                return state
            time.sleep(0.5)

    def _driver_of(self, write: Write) -> str:
        for driver in self.config.drivers:
            if write.key in self.messages[driver] or any(
                write.detail.startswith(t.load_id + " ") for t in self.trips[driver]
            ):
                return driver
        return self.config.drivers[0]

    def _poll_version(
        self, client: httpx.Client, trip: Trip, auth: dict[str, str], deadline: float
    ) -> int | None:
        version = None
        while True:
            r = self._call(client, None, "GET", f"/loads/{trip.load_id}", auth)
            if r is not None and r.status_code == 200 and classify(200, r.headers) is Outcome.LIVE:
                version = int(r.json()["version"])
                if version >= 1 + len(trip.keys):
                    return version
            if self.clock() >= deadline:
                return version
            time.sleep(0.5)

    def _inbox(self, client: httpx.Client, auth: dict[str, str], driver: str) -> list[str]:
        """The bodies of this run's messages in ``driver``'s inbox (newest first, paged)."""
        bodies: list[str] = []
        cursor: str | None = None
        for _ in range(20):
            path = "/message?limit=50" + (f"&cursor={cursor}" if cursor else "")
            r = self._call(client, None, "GET", path, auth)
            if r is None or r.status_code != 200:
                break
            page = r.json()
            bodies += [m["body"] for m in page["items"] if self.run_id in m["body"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return bodies


def _identity(data: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two answers to one write the same write."""
    return (data.get("seq"), data.get("message_id"), data.get("pass_id"), data.get("load_id"))


def _retry_after(r: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (delta form), or None."""
    try:
        return max(0.0, float(r.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def _problem(r: httpx.Response) -> tuple[str, str]:
    """A problem answer's code (``urn:relay:problem:<code>``) and detail, or blanks."""
    try:
        problem = r.json()
    except ValueError:
        return "", r.text[:200]
    if not isinstance(problem, dict):
        return "", ""
    code = str(problem.get("type", "")).rsplit(":", 1)[-1]
    return code, str(problem.get("detail", ""))[:200]


def _said(r: httpx.Response | None) -> str:
    return "no answer" if r is None else f"{r.status_code} {r.text[:200]}"
