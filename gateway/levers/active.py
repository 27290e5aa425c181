"""Each gateway instance's copy of the levers in force, read as the releases and cell
placements are (:class:`~gateway.sharedcopy.SharedCopy`): at start-up (a Lambda
environment: on its first request), then every ``refresh_seconds`` in the background from
the request path, so a lever pulled on one instance holds on every instance within about a
second, and a slow table never slows a request (the last copy stays in force).

Expiry is read from the wall clock at every question, not only at a refresh: a lever lets
go at its ``expires_at`` on every instance, whatever the age of the copy or the table's TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.forwarding.upstream import ShortCircuited
from gateway.levers.store import LeverStore
from gateway.sharedcopy import SharedCopy
from shared_contracts.levers import Lever, LeverType

log = logging.getLogger("relay.gateway.levers")

DEFAULT_REFRESH_SECONDS = 1.0
_NEVER = float("inf")


class ForcedFallback(ShortCircuited):
    """Not attempted: a ``fallback`` lever holds the module (or cell) on its fallback, as
    an open breaker would."""

    reason = "fallback-lever"


class ActiveLevers:
    """The levers this instance acts on. Cheap on the request path: with no lever in force,
    :meth:`forced_fallback` is one dictionary look-up."""

    def __init__(
        self,
        store: LeverStore | None,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        timeout_seconds: float = 0.5,
        background: bool = True,
    ) -> None:
        self.wall_clock = wall_clock
        self.background = background  # False: the owner refreshes (tests, tools)
        self.levers: dict[str, Lever] = {}  # the copy: active when read, by id
        self._fallback: dict[str, float] = {}  # unit or module -> expires_at
        self._shed: dict[str, float] = {}  # tier -> expires_at
        self.copy = SharedCopy(
            store.load if store is not None else None,
            self.apply,
            what="levers",
            clock=clock,
            refresh_seconds=refresh_seconds,
            timeout_seconds=timeout_seconds,
        )

    @property
    def loaded(self) -> bool:
        return self.copy.loaded

    async def load_at_start(self) -> None:
        await self.copy.load_at_start()

    def refresh(self) -> None:
        """Read the levers now (synchronous: tests, tools)."""
        self.copy.refresh()

    def keep_current(self) -> None:
        if self.background:
            self.copy.keep_current()

    def apply(self, levers: list[Lever]) -> None:
        now = self.wall_clock()
        active = {lever.lever_id: lever for lever in levers if lever.active(now)}
        for the_id, lever in active.items():
            if (old := self.levers.get(the_id)) is None or old.revision != lever.revision:
                log.warning(
                    "lever %s pulled by %s until %s: %s",
                    the_id,
                    lever.who or "?",
                    lever.expires_at,
                    lever.why,
                )
        for the_id in self.levers.keys() - active.keys():
            log.warning("lever %s let go", the_id)
        self.levers = active
        self._fallback = self._expiries(LeverType.FALLBACK)
        self._shed = self._expiries(LeverType.SHED)

    def _expiries(self, kind: LeverType) -> dict[str, float]:
        return {
            lever.target: _NEVER if lever.expires_at is None else float(lever.expires_at)
            for lever in self.levers.values()
            if lever.type is kind
        }

    # --- what the gateway asks --------------------------------------------------------

    def forced_fallback(self, unit: str) -> bool:
        """Whether ``unit`` (``loads``, or a cell, ``loads/cell-1``) is held on its fallback,
        by its own lever or its module's."""
        self.keep_current()
        forced = self._fallback
        if not forced:
            return False
        until = forced.get(unit)
        if until is None and "/" in unit:
            until = forced.get(unit.split("/", 1)[0])
        return until is not None and self.wall_clock() < until

    def shed_tiers(self) -> frozenset[str]:
        """The tiers whose traffic is refused now (503 + Retry-After)."""
        self.keep_current()
        if not self._shed:
            return frozenset()
        now = self.wall_clock()
        return frozenset(tier for tier, until in self._shed.items() if now < until)

    def active(self) -> list[Lever]:
        """The levers in force now, by id."""
        now = self.wall_clock()
        return [lever for _, lever in sorted(self.levers.items()) if lever.active(now)]

    def view(self) -> dict[str, Any]:
        """As ``/ops/status`` shows it: each lever in force and its seconds left."""
        now = self.wall_clock()
        return {
            lever.lever_id: {
                "who": lever.who,
                "why": lever.why,
                "expires_in_seconds": lever.remaining(now),
            }
            for lever in self.active()
        }
