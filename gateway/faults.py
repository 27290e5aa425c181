"""Fault injection for game days: latency, errors, black holes, per module.

Faults are set by operators (``PUT /ops/faults/{module}``), always expire on their own
(a forgotten fault turns itself off), and are applied at the gateway's upstream call, so
they exercise the real timeout, retry, breaker and fallback path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger("relay.gateway.faults")

Clock = Callable[[], float]
DEFAULT_FAULT_TTL_SECONDS = 300
MAX_FAULT_TTL_SECONDS = 3600


class FaultKind(StrEnum):
    LATENCY = "latency"        # add latency_ms before the call
    ERROR = "error"            # answer 503 instead of calling, with probability error_rate
    BLACKHOLE = "blackhole"    # accept and never answer (the call times out)


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    latency_ms: int = Field(default=0, ge=0, le=60_000)
    error_rate: float = Field(default=1.0, gt=0, le=1)
    ttl_seconds: int = Field(default=DEFAULT_FAULT_TTL_SECONDS, ge=1, le=MAX_FAULT_TTL_SECONDS)
    reason: str = Field(default="game day", max_length=200)

    @model_validator(mode="after")
    def _latency_needs_ms(self) -> "FaultSpec":
        if self.kind is FaultKind.LATENCY and self.latency_ms == 0:
            raise ValueError("a latency fault needs latency_ms > 0")
        return self


class ActiveFault(BaseModel):
    module: str
    spec: FaultSpec
    set_by: str
    expires_in_seconds: float


class InjectedError(Exception):
    """The upstream call was answered by an injected error fault."""


class FaultInjector:
    def __init__(self, *, clock: Clock = time.monotonic, rng: random.Random | None = None,
                 sleep: Callable[[float], object] = asyncio.sleep) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.sleep = sleep
        self._faults: dict[str, tuple[FaultSpec, str, float]] = {}

    def set(self, module: str, spec: FaultSpec, set_by: str) -> ActiveFault:
        self._faults[module] = (spec, set_by, self.clock() + spec.ttl_seconds)
        log.warning("fault set on %s by %s: %s (expires in %ss; %s)", module, set_by,
                    spec.kind.value, spec.ttl_seconds, spec.reason)
        return self._view(module)  # type: ignore[return-value]

    def clear(self, module: str, cleared_by: str) -> bool:
        if self._faults.pop(module, None) is None:
            return False
        log.warning("fault on %s cleared by %s", module, cleared_by)
        return True

    def active(self, module: str) -> FaultSpec | None:
        entry = self._faults.get(module)
        if entry is None:
            return None
        spec, _, expires = entry
        if self.clock() >= expires:
            del self._faults[module]
            log.warning("fault on %s expired", module)
            return None
        return spec

    def _view(self, module: str) -> ActiveFault | None:
        if self.active(module) is None:
            return None
        spec, by, expires = self._faults[module]
        return ActiveFault(module=module, spec=spec, set_by=by,
                           expires_in_seconds=round(expires - self.clock(), 1))

    def list(self) -> list[ActiveFault]:
        return [f for m in list(self._faults) if (f := self._view(m)) is not None]

    async def before_call(self, module: str) -> None:
        """Apply the module's fault, if any, just before the real upstream call."""
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
