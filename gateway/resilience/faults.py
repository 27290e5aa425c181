"""Fault injection for game days: latency, errors, black holes, per module.

Faults are set by operators (``PUT /ops/faults/{module}``), always expire on their own
(a forgotten fault turns itself off), and are applied at the gateway's upstream call, so
they exercise the real timeout, retry, breaker and fallback path. They live in the
control table, so every gateway instance applies them, and so does the deferred-write
replayer: a module a game day says is down gets no replayed writes either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway import aws_calls
from module_kit import logs

log = logging.getLogger("relay.gateway.faults")

Clock = Callable[[], float]
DEFAULT_FAULT_TTL_SECONDS = 300
MAX_FAULT_TTL_SECONDS = 3600
DEFAULT_REFRESH_SECONDS = 1.0  # how stale another instance's view of a fault may be
DEFAULT_STORE_TIMEOUT_SECONDS = 0.5


class FaultKind(StrEnum):
    LATENCY = "latency"  # add latency_ms before the call
    ERROR = "error"  # answer 503 instead of calling, with probability error_rate
    BLACKHOLE = "blackhole"  # accept and never answer (the call times out)


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    error_rate: float = Field(default=1.0, gt=0, le=1)
    ttl_seconds: int = Field(default=DEFAULT_FAULT_TTL_SECONDS, ge=1, le=MAX_FAULT_TTL_SECONDS)
    reason: str = Field(default="game day", max_length=200)

    @model_validator(mode="after")
    def _latency_needs_ms(self) -> FaultSpec:
        if self.kind is FaultKind.LATENCY and self.latency_ms == 0:
            raise ValueError("a latency fault needs latency_ms > 0")
        return self


class ActiveFault(BaseModel):
    module: str
    spec: FaultSpec
    set_by: str
    expires_in_seconds: float


class FaultRecord(BaseModel):
    """A fault as stored: what, who, and until when (wall-clock epoch seconds)."""

    module: str
    spec: FaultSpec
    set_by: str
    expires_at: float


class InjectedError(Exception):
    """The upstream call was answered by an injected error fault."""


class FaultStore(Protocol):
    """Where faults live so that every gateway instance and the replayer see them."""

    def load(self) -> dict[str, FaultRecord]: ...

    def put(self, record: FaultRecord) -> None: ...

    def delete(self, module: str) -> None: ...


class ControlTableFaults(aws_calls.DynamoTable):
    """Faults in the control table (``ControlTable`` in template.yaml): ``kind = "fault"``,
    ``name`` = module; DynamoDB's TTL removes them some time after they expire (they are
    ignored from the moment they do)."""

    KIND = "fault"

    def load(self) -> dict[str, FaultRecord]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "kind = :k",
            "ExpressionAttributeValues": {":k": self.KIND},
            "ConsistentRead": True,
        }
        out: dict[str, FaultRecord] = {}
        while True:
            page = self.table.query(**kwargs)
            for item in page.get("Items", []):
                record = FaultRecord.model_validate_json(item["record"])
                out[record.module] = record
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def put(self, record: FaultRecord) -> None:
        self.table.put_item(
            Item={
                "kind": self.KIND,
                "name": record.module,
                "record": record.model_dump_json(),
                "expires_at": int(record.expires_at) + 1,
            }
        )

    def delete(self, module: str) -> None:
        self.table.delete_item(Key={"kind": self.KIND, "name": module})


class FaultInjector:
    """Faults by module, expiring on the wall clock. With a ``store`` every instance sees
    the faults any instance set: writes go through to it, and reads come from a copy
    refreshed at most every ``refresh_seconds`` (in the background on the request path,
    so a slow store never slows a request; the last copy stays in force meanwhile)."""

    def __init__(
        self,
        *,
        store: FaultStore | None = None,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        store_timeout_seconds: float = DEFAULT_STORE_TIMEOUT_SECONDS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - sampling faults, not secrets
        self.sleep = sleep
        self.refresh_seconds = refresh_seconds
        self.store_timeout_seconds = store_timeout_seconds
        self._faults: dict[str, FaultRecord] = {}
        self._loaded_at = -math.inf
        self._refreshing: asyncio.Future[None] | None = None

    def set(self, module: str, spec: FaultSpec, set_by: str) -> ActiveFault:
        record = FaultRecord(
            module=module, spec=spec, set_by=set_by, expires_at=self.clock() + spec.ttl_seconds
        )
        if self.store is not None:
            self.store.put(record)
        self._faults[module] = record
        log.warning(
            "fault set on %s by %s: %s (expires in %ss; %s)",
            module,
            logs.caller_hash(set_by),  # an operator's sub, as logs show every caller
            spec.kind.value,
            spec.ttl_seconds,
            spec.reason,
            extra=logs.fields(module=module, caller=set_by),
        )
        return self._view(record)

    def clear(self, module: str, cleared_by: str) -> bool:
        if self.store is not None:
            self.store.delete(module)
        if self._faults.pop(module, None) is None:
            return False
        log.warning(
            "fault on %s cleared by %s",
            module,
            logs.caller_hash(cleared_by),
            extra=logs.fields(module=module, caller=cleared_by),
        )
        return True

    def active(self, module: str) -> FaultSpec | None:
        """The fault in force on ``module``: a cell's own ("loads/cell-1"), else its
        module's (a fault on "loads" holds for every cell)."""
        record = self._faults.get(module)
        if record is None and "/" in module:
            record = self._faults.get(module.split("/", 1)[0])
        if record is None or self.clock() >= record.expires_at:
            return None
        return record.spec

    def _view(self, record: FaultRecord) -> ActiveFault:
        return ActiveFault(
            module=record.module,
            spec=record.spec,
            set_by=record.set_by,
            expires_in_seconds=round(record.expires_at - self.clock(), 1),
        )

    def list(self) -> list[ActiveFault]:
        return [self._view(r) for m, r in sorted(self._faults.items()) if self.active(m)]

    # --- keeping the copy current -------------------------------------------------------

    def _stale(self) -> bool:
        return self.store is not None and self.clock() - self._loaded_at >= self.refresh_seconds

    def refresh(self) -> None:
        """Load the store's faults now (synchronous; the replayer and tests use it)."""
        if self.store is not None:
            loaded = self.store.load()
            self._loaded_at = self.clock()
            if loaded != self._faults:
                log.warning(
                    "faults in force: %s",
                    ", ".join(f"{m} ({r.spec.kind.value})" for m, r in sorted(loaded.items()))
                    or "none",
                )
            self._faults = loaded

    def refresh_if_stale(self) -> None:
        if self._stale():
            try:
                self.refresh()
            except Exception as exc:  # botocore errors: keep the last copy in force
                log.error("could not load faults (%r); keeping the last copy", exc)

    def _refresh_in_background(self) -> None:
        if not self._stale() or self._refreshing is not None:
            return
        self._loaded_at = self.clock()  # one refresh per period, even if it fails

        def done(future: asyncio.Future[None]) -> None:
            self._refreshing = None
            if not future.cancelled() and future.exception() is not None:
                log.error("could not load faults (%r); keeping the last copy", future.exception())

        self._refreshing = asyncio.ensure_future(
            aws_calls.call(self.refresh, timeout=self.store_timeout_seconds, what="control table")
        )
        self._refreshing.add_done_callback(done)

    async def before_call(self, module: str) -> None:
        """Apply the module's (or the cell's) fault, if any, just before the real upstream
        call."""
        self._refresh_in_background()
        spec = self.active(module)
        if spec is None:
            return
        if spec.kind is FaultKind.LATENCY:
            await self.sleep(spec.latency_ms / 1000)
        elif spec.kind is FaultKind.ERROR:
            if self.rng.random() < spec.error_rate:
                raise InjectedError(f"injected error on {module}")
        else:  # black hole: never answers; the caller's deadline ends the wait
            await asyncio.Event().wait()
