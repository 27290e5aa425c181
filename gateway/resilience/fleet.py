"""Breakers across the fleet: one module's breaker state shared by every gateway instance.

Each gateway instance (a Lambda execution environment, or one of N processes behind a
balancer) has its own :class:`~gateway.resilience.breaker.CircuitBreaker` per module. On
their own, each must see ``fail_max`` failures before it fails fast, so an outage costs
every instance its own round of full-deadline waits. Here they share, in the control
table (``kind = "breaker"``, ``name`` = module, one item per module):

- the **failure count**: every failure an instance's closed breaker counts is added to the
  module's shared count (an atomic ``ADD``; a count older than the reset timeout starts
  again), and a success after failures sets it back to 0, so the fleet's failures in a
  row open the breaker, wherever they fell;
- the **opening**: the instance that opens (its own ``fail_max``, or the shared count
  reaching it) publishes who, when, why and until when, by a conditional write that never
  replaces an opening in force (concurrent openers do not flap);
- the **probe lease**: once the opening's ``until`` has passed, one instance takes the
  lease by a conditional write and is the only one fleet-wide to probe the module in that
  reset period; its probe's success deletes the opening (conditionally, that opening
  only) and every instance closes; its failure publishes a new opening.

Every instance reads the items through a local copy refreshed at most every
``refresh_seconds``: from the request path (a clock read and a comparison per request)
and, in a process, from a loop of its own, in the background. A new opening in the copy
opens the local breaker (pybreaker's public ``open()``), its disappearance closes it
(``close()``); both are ordinary transitions, recorded and logged as the breaker's events.

In Lambda (no loop: ``sleep=None``, ``RELAY_BREAKER_REFRESH=request``) an environment is
frozen between invocations, so a copy refreshed in the background would show an opening
only after the request that started the refresh had gone to the dead module. There, the
one thing a request awaits is the refresh of the copy when it is due
(:meth:`FleetBreakers.refresh_if_due`, from the breaker step): at most one load in flight
per instance, which the requests that come meanwhile share, and none of them waits longer
than ``refresh_wait_seconds`` after that load started; then the breaker decides, on the
new copy or, the load not back yet, on the old one (the load lands later in the
background). Every other store call, and every call in a process, is never awaited by a
request.

The store is never trusted to say a module is down by failing: every store call runs on
the AWS thread pool with a deadline (:mod:`gateway.aws_calls`), and its errors and
timeouts are logged and counted and change nothing. A copy older than ``stale_seconds``
is not followed for probing: the local breaker probes on its own timeout, as it would with
no store at all.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from gateway import aws_calls
from gateway.config import (
    DEFAULT_BREAKER_REFRESH_SECONDS,
    DEFAULT_BREAKER_REFRESH_WAIT_SECONDS,
    DEFAULT_BREAKER_STALE_SECONDS,
    DEFAULT_BREAKER_STORE_TIMEOUT_SECONDS,
)

if TYPE_CHECKING:
    from gateway.resilience.breaker import CircuitBreaker

log = logging.getLogger("relay.gateway.breaker")

Clock = Callable[[], float]
RECORD_TTL_SECONDS = 86_400  # DynamoDB's TTL removes an item a day after its last write


@dataclass(frozen=True, slots=True)
class FleetRecord:
    """A module's shared breaker item: the fleet's failure count and, while open, who
    opened it, when, why, until when (wall-clock epoch seconds) and who holds the probe
    lease."""

    module: str
    failures: int = 0
    last_failure_at: float | None = None
    opened_by: str | None = None
    opened_at: float | None = None
    until: float | None = None
    reason: str | None = None
    probe_by: str | None = None
    probe_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def view(self, now: float) -> dict[str, Any]:
        """As ``/ops/status`` shows it."""
        out: dict[str, Any] = {"state": "open" if self.is_open else "closed"}
        out["failures"] = self.failures
        if self.opened_at is not None and self.until is not None:
            out |= {
                "opened_by": self.opened_by,
                "opened_at": self.opened_at,
                "opened_seconds_ago": round(now - self.opened_at, 3),
                "until": self.until,
                "probe_in": round(max(self.until - now, 0.0), 3),
                "reason": self.reason,
                "probe_by": self.probe_by if (self.probe_until or 0) > now else None,
            }
        return out


class BreakerStore(Protocol):
    """Where the fleet's breaker items live. Synchronous (boto3): called on the AWS thread
    pool only. The conditional writes answer whether they were made."""

    def load(self) -> dict[str, FleetRecord]: ...

    def add_failure(self, module: str, now: float, window: float) -> FleetRecord: ...

    def reset_failures(self, module: str, now: float) -> None: ...

    def open(
        self, module: str, by: str, now: float, until: float, reason: str, reopen: bool
    ) -> bool: ...

    def lease_probe(
        self, module: str, by: str, opened_at: float, now: float, until: float
    ) -> bool: ...

    def close(self, module: str, opened_at: float) -> bool: ...


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


class ControlTableBreakers(aws_calls.DynamoTable):
    """The fleet's breaker items in the control table (``ControlTable`` in template.yaml):
    ``kind = "breaker"``, ``name`` = module; numbers are epoch seconds. Every write sets
    ``expires_at`` a day ahead, so DynamoDB's TTL removes items nobody writes any more."""

    KIND = "breaker"

    def __init__(self, table_name: str, *, dynamodb: Any = None) -> None:
        super().__init__(table_name, dynamodb=dynamodb)
        self._made = threading.Lock()

    @property
    def table(self) -> Any:
        # The first calls run on several pool threads at once: boto3's default session
        # must not make the resource from two of them together.
        with self._made:
            return super().table

    def _key(self, module: str) -> dict[str, str]:
        return {"kind": self.KIND, "name": module}

    @staticmethod
    def _record(item: dict[str, Any]) -> FleetRecord:
        return FleetRecord(
            module=str(item["name"]),
            failures=int(item.get("failures", 0)),
            last_failure_at=_number(item.get("last_failure_at")),
            opened_by=item.get("opened_by"),
            opened_at=_number(item.get("opened_at")),
            until=_number(item.get("until")),
            reason=item.get("reason"),
            probe_by=item.get("probe_by"),
            probe_until=_number(item.get("probe_until")),
        )

    @staticmethod
    def _conditional_failed(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")

    def load(self) -> dict[str, FleetRecord]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "kind = :k",
            "ExpressionAttributeValues": {":k": self.KIND},
            "ConsistentRead": True,
        }
        out: dict[str, FleetRecord] = {}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                record = self._record(item)
                out[record.module] = record
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def add_failure(self, module: str, now: float, window: float) -> FleetRecord:
        from decimal import Decimal

        values = {":one": 1, ":now": Decimal(str(now)), ":ttl": int(now) + RECORD_TTL_SECONDS}
        try:  # one more in a count that is still recent
            item = self.table.update_item(
                Key=self._key(module),
                UpdateExpression="ADD failures :one SET last_failure_at = :now, expires_at = :ttl",
                ConditionExpression="last_failure_at >= :since",
                ExpressionAttributeValues={**values, ":since": Decimal(str(now - window))},
                ReturnValues="ALL_NEW",
            )["Attributes"]
        except Exception as exc:
            if not self._conditional_failed(exc):
                raise
            item = self.table.update_item(  # none yet, or too old: this one starts a count
                Key=self._key(module),
                UpdateExpression="SET failures = :one, last_failure_at = :now, expires_at = :ttl",
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )["Attributes"]
        return self._record(item)

    def reset_failures(self, module: str, now: float) -> None:
        try:
            self.table.update_item(
                Key=self._key(module),
                UpdateExpression="SET failures = :zero, expires_at = :ttl",
                ConditionExpression="failures > :zero",
                ExpressionAttributeValues={":zero": 0, ":ttl": int(now) + RECORD_TTL_SECONDS},
            )
        except Exception as exc:
            if not self._conditional_failed(exc):
                raise

    def open(
        self, module: str, by: str, now: float, until: float, reason: str, reopen: bool
    ) -> bool:
        """Publish an opening unless one is in force: none open, or its reset period over
        and its probe lease (if any) expired; ``reopen``: the lease holder's failed probe."""
        from decimal import Decimal

        condition = (
            "attribute_not_exists(opened_at) OR (#until < :now AND "
            "(attribute_not_exists(probe_until) OR probe_until < :now))"
        )
        values: dict[str, Any] = {
            ":by": by,
            ":now": Decimal(str(now)),
            ":until": Decimal(str(until)),
            ":reason": reason,
            ":ttl": int(until) + RECORD_TTL_SECONDS,
        }
        if reopen:
            condition += " OR probe_by = :by"
        try:
            self.table.update_item(
                Key=self._key(module),
                UpdateExpression=(
                    "SET opened_by = :by, opened_at = :now, #until = :until, reason = :reason, "
                    "expires_at = :ttl REMOVE probe_by, probe_until"
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues=values,
            )
        except Exception as exc:
            if self._conditional_failed(exc):
                return False
            raise
        return True

    def lease_probe(self, module: str, by: str, opened_at: float, now: float, until: float) -> bool:
        """Take the probe lease of the opening ``opened_at`` once its reset period is over,
        unless another instance holds it."""
        from decimal import Decimal

        try:
            self.table.update_item(
                Key=self._key(module),
                UpdateExpression="SET probe_by = :by, probe_until = :lease",
                ConditionExpression=(
                    "opened_at = :opened AND #until <= :now AND "
                    "(attribute_not_exists(probe_until) OR probe_until < :now)"
                ),
                ExpressionAttributeNames={"#until": "until"},
                ExpressionAttributeValues={
                    ":by": by,
                    ":opened": Decimal(str(opened_at)),
                    ":now": Decimal(str(now)),
                    ":lease": Decimal(str(until)),
                },
            )
        except Exception as exc:
            if self._conditional_failed(exc):
                return False
            raise
        return True

    def close(self, module: str, opened_at: float) -> bool:
        """Delete the opening ``opened_at`` (and the count with it); a newer one stays."""
        from decimal import Decimal

        try:
            self.table.delete_item(
                Key=self._key(module),
                ConditionExpression="opened_at = :opened",
                ExpressionAttributeValues={":opened": Decimal(str(opened_at))},
            )
        except Exception as exc:
            if self._conditional_failed(exc):
                return False
            raise
        return True


def instance_name() -> str:
    """Who this gateway instance is, in the records and logs: host, process and a random
    suffix (Lambda environments share host names)."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class FleetBreakers:
    """One gateway instance's view of the fleet's breakers, and its part in them. Built
    once per app and attached to each module's breaker; the breaker tells it of its
    failures, successes after failures and transitions, and asks it whether it may probe.
    Nothing here is awaited by a request, but for a due refresh of the copy when requests
    alone refresh it (:meth:`refresh_if_due`, bounded by ``refresh_wait_seconds``)."""

    def __init__(
        self,
        store: BreakerStore,
        *,
        instance: str | None = None,
        clock: Clock = time.time,
        refresh_seconds: float = DEFAULT_BREAKER_REFRESH_SECONDS,
        stale_seconds: float = DEFAULT_BREAKER_STALE_SECONDS,
        store_timeout_seconds: float = DEFAULT_BREAKER_STORE_TIMEOUT_SECONDS,
        refresh_wait_seconds: float = DEFAULT_BREAKER_REFRESH_WAIT_SECONDS,
        sleep: Callable[[float], Awaitable[object]] | None = asyncio.sleep,
    ) -> None:
        """``sleep``: the background loop's (refreshing every ``refresh_seconds`` while the
        process is idle); ``None``: requests alone refresh the copy (Lambda), and a request
        whose copy is due waits for the refresh, at most ``refresh_wait_seconds``."""
        self.store = store
        self.instance = instance or instance_name()
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.stale_seconds = stale_seconds
        self.store_timeout_seconds = store_timeout_seconds
        self.sleep = sleep
        self.refresh_wait_seconds = refresh_wait_seconds
        self.requests_refresh = sleep is None  # the breaker step awaits refresh_if_due()
        self.records: dict[str, FleetRecord] = {}
        self.loaded_at = -math.inf
        self.store_errors: Counter[str] = Counter()
        self.breakers: dict[str, CircuitBreaker] = {}
        self._next_refresh = -math.inf
        self._load: asyncio.Future[Any] | None = None  # the refresh in flight
        self._wait_until = -math.inf  # requests wait for it until then (the event loop's time)
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._following: dict[str, float] = {}  # module -> the opening its breaker follows
        self._leases: dict[str, float] = {}  # module -> the opening whose probe lease is ours
        self._asking: set[tuple[str, str]] = set()  # (operation, module) calls in flight
        # modules whose shared count the copy shows above 0: a success here resets it
        # (once per copy), so failures in a row means in a row fleet-wide
        self.failing: set[str] = set()

    def attach(self, breaker: CircuitBreaker) -> None:
        self.breakers[breaker.name] = breaker

    # --- the copy: refreshed in the background, or awaited by requests (Lambda) ----------

    def tick(self) -> None:
        """On every request through a breaker: start a refresh when the copy is due one."""
        if self.clock() >= self._next_refresh:
            self._refresh()

    async def refresh_if_due(self) -> None:
        """Requests alone refresh the copy (``sleep`` None): before the breaker decides, a
        request starts the refresh when the copy is due one and waits for the load in
        flight, until it lands or ``refresh_wait_seconds`` after it started. Concurrent
        requests share the one load and its deadline; a load that fails or is late changes
        nothing (it is counted and logged when it fails) and the request goes on."""
        self.tick()
        load = self._load
        if load is None or load.done():
            return
        remaining = self._wait_until - asyncio.get_running_loop().time()
        if remaining > 0:
            # the load's own done callback (_spawn) runs before this wait's: a load that
            # landed is in the copy when this returns
            await asyncio.wait((load,), timeout=remaining)

    def _refresh(self) -> None:
        if self._load is not None:
            return
        self._next_refresh = self.clock() + self.refresh_seconds  # one per period, even failing
        self._load = self._spawn("load", self.store.load, then=self._loaded)
        if self._load is not None:
            self._wait_until = asyncio.get_running_loop().time() + self.refresh_wait_seconds
            if self.sleep is not None and self._loop_task is None:
                self._loop_task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        sleep = self.sleep
        while sleep is not None:
            await sleep(self.refresh_seconds)
            self.tick()

    def _loaded(self, records: dict[str, FleetRecord]) -> None:
        self.records = records
        self.loaded_at = self.clock()
        self.failing = {m for m, r in records.items() if r.failures > 0 and r.opened_at is None}
        for breaker in self.breakers.values():
            self._follow(breaker)

    def fresh(self) -> bool:
        return self.clock() - self.loaded_at <= self.stale_seconds

    def _follow(self, breaker: CircuitBreaker) -> None:
        """Bring the local breaker in line with the copy: a new opening elsewhere opens it,
        the end of the opening it followed closes it."""
        from gateway.resilience.breaker import BreakerState

        name = breaker.name
        record = self.records.get(name)
        opened_at = record.opened_at if record is not None else None
        if record is not None and opened_at is not None:
            if self._following.get(name) == opened_at:
                return
            self._following[name] = opened_at
            if breaker.state is BreakerState.CLOSED:
                breaker.follow_open(
                    f"opened fleet-wide by {record.opened_by} ({record.reason})",
                    opened_seconds_ago=max(self.clock() - opened_at, 0.0),
                )
        elif name in self._following:
            del self._following[name]
            self._leases.pop(name, None)
            if breaker.state is not BreakerState.CLOSED:
                breaker.follow_close("closed fleet-wide (another instance's probe succeeded)")

    # --- what the local breaker reports --------------------------------------------------

    def failed(self, breaker: CircuitBreaker) -> None:
        """A failure counted by the closed breaker: add it to the fleet's count; the count
        reaching ``fail_max`` opens this instance's breaker (which publishes the opening)."""
        name, now = breaker.name, self.clock()

        def counted(record: FleetRecord) -> None:
            from gateway.resilience.breaker import BreakerState

            if record.failures >= breaker.config.fail_max and breaker.state is BreakerState.CLOSED:
                breaker.open_for_fleet(f"{record.failures} failures in a row across the fleet")

        window = breaker.config.reset_timeout_seconds
        self._spawn("count", self.store.add_failure, name, now, window, then=counted)

    def recovered(self, breaker: CircuitBreaker) -> None:
        """A success after failures: the fleet's count starts again."""
        self.failing.discard(breaker.name)
        self._spawn("reset", self.store.reset_failures, breaker.name, self.clock(), once=True)

    def opened(self, breaker: CircuitBreaker, reason: str) -> None:
        """The local breaker opened on its own (not following the fleet): publish it."""
        name, now = breaker.name, self.clock()
        reopen = name in self._leases
        opened_at = now

        def published(made: bool) -> None:
            if made:
                self._following[name] = opened_at
                self._leases.pop(name, None)
                self.records[name] = replace(
                    self.records.get(name, FleetRecord(name)),
                    opened_by=self.instance,
                    opened_at=opened_at,
                    until=opened_at + breaker.config.reset_timeout_seconds,
                    reason=reason,
                    probe_by=None,
                    probe_until=None,
                )

        until = now + breaker.config.reset_timeout_seconds
        self._spawn("open", self.store.open, name, self.instance, now, until, reason, reopen,
                    then=published)  # fmt: skip

    def closed(self, breaker: CircuitBreaker) -> None:
        """The local probe succeeded: end the opening it followed, fleet-wide."""
        name = breaker.name
        opened_at = self._following.pop(name, None)
        self._leases.pop(name, None)
        if opened_at is None:
            return

        def ended(made: bool) -> None:
            record = self.records.get(name)
            if made and record is not None and record.opened_at == opened_at:
                del self.records[name]

        self._spawn("close", self.store.close, name, opened_at, then=ended)

    def may_probe(self, breaker: CircuitBreaker) -> bool:
        """The local breaker's reset timeout is over: may this instance probe? Yes unless
        a fresh copy shows the opening in force elsewhere and the lease is not ours; past
        the opening's ``until`` this asks for the lease in the background."""
        name, now = breaker.name, self.clock()
        record = self.records.get(name)
        if record is None or record.opened_at is None or record.until is None:
            return True
        if not self.fresh():
            return True
        opened_at = record.opened_at
        if self._leases.get(name) == opened_at:
            return True
        if now >= record.until and (record.probe_until is None or record.probe_until < now):

            def leased(made: bool) -> None:
                if made:
                    self._leases[name] = opened_at

            lease_until = now + breaker.config.reset_timeout_seconds
            self._spawn(
                "lease", self.store.lease_probe, name, self.instance, opened_at, now,
                lease_until, then=leased, once=True,
            )  # fmt: skip
        return False

    # --- store calls: background, with a deadline, errors counted --------------------------

    def _spawn(
        self,
        operation: str,
        fn: Callable[..., Any],
        *args: Any,
        then: Callable[[Any], None] | None = None,
        once: bool = False,
    ) -> asyncio.Future[Any] | None:
        """The store call, started on the AWS thread pool (None: not started)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None  # no event loop (a synchronous caller): nothing to run it on
        key = (operation, str(args[0]) if args else "")
        if once:
            if key in self._asking:
                return None
            self._asking.add(key)
        task = asyncio.ensure_future(
            aws_calls.call(
                fn,
                *args,
                timeout=self.store_timeout_seconds,
                what=f"control table (breaker {operation})",
            )
        )
        self._tasks.add(task)

        def done(future: asyncio.Future[Any]) -> None:
            self._tasks.discard(future)
            self._asking.discard(key)
            if operation == "load":
                self._load = None
            if future.cancelled():
                return
            exc = future.exception()
            if exc is not None:
                self.store_errors[operation] += 1
                log.warning(
                    "breaker store: %s for %s failed (%r); the local breakers decide alone",
                    operation,
                    key[1] or "all modules",
                    exc,
                )
                return
            if then is not None:
                then(future.result())

        task.add_done_callback(done)
        return task

    async def idle(self) -> None:
        """Wait for every store call in flight, and those their answers start (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close_loop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None

    # --- views -----------------------------------------------------------------------------

    def status(self, module: str) -> dict[str, Any]:
        """The fleet's state of ``module`` as this instance last read it."""
        now = self.clock()
        record = self.records.get(module)
        view = record.view(now) if record else FleetRecord(module).view(now)
        return {
            **view,
            "copy_age_seconds": (
                round(now - self.loaded_at, 3) if self.loaded_at > -math.inf else None
            ),
            "probe_lease_held": module in self._leases,
            "instance": self.instance,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "refresh_seconds": self.refresh_seconds,
            "refresh": "request" if self.requests_refresh else "background",
            "store_errors": dict(self.store_errors),
        }
