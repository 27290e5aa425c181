"""The cell router: which cell of a celled module a request goes to (docs/cells.md).

A celled module (``upstream = "cell-1=...,cell-2=..."`` in routes.toml) is N complete,
independent copies of the module, each with its own tables, queues and function, and in
the gateway its own upstream (``loads/cell-1``): breaker, bulkhead, retry budget,
release, metrics. Each route of it names where its partition key comes from
(``cell_key``): the calling driver, or a field of the JSON body (a dispatcher assigning a
load names the driver). The key's cell is its explicit placement if it has one
(:mod:`gateway.cells.placement`), else the deterministic default.

Every gateway instance keeps a copy of the explicit placements, read at start-up and
again every ``refresh_seconds`` in the background from the request path (a slow store
never slows a request; the last copy stays in force; a store that never answered leaves
the defaults), as the releases are (:mod:`gateway.release.router`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.cells.placement import Placement, PlacementSource, default_cell
from gateway.routing.routes import ModuleConfig, Route
from gateway.sharedcopy import SharedCopy
from module_kit import logs

log = logging.getLogger("relay.gateway.cells")

DEFAULT_REFRESH_SECONDS = 1.0
# A request to a celled module is routed by a copy at most this old: an instance whose copy
# is older (idle, or the store did not answer) reads the placements first; if it cannot,
# a write is deferred and a read uses the last copy. ``relay cells move`` waits longer than
# this before it copies a key, and again before it deletes the old cell's copy.
DEFAULT_STALE_SECONDS = 3.0
MEMO_ENTRIES = 100_000  # keys whose destination is remembered (then forgotten at once)


@dataclass(frozen=True, slots=True)
class Destination:
    """Where one request goes: the upstream's name (``loads/cell-1``), its cell, and
    whether its key is being moved (its writes wait in the deferred queue)."""

    unit: str
    cell: str
    moving: bool = False


class Cells:
    """The celled modules' cells, and this instance's copy of the explicit placements."""

    def __init__(
        self,
        modules: Mapping[str, ModuleConfig],
        store: PlacementSource | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        timeout_seconds: float = 0.5,
        stale_seconds: float = DEFAULT_STALE_SECONDS,
        background: bool = True,
    ) -> None:
        self.modules = {name: m for name, m in modules.items() if m.celled}
        self.cells = {name: list(m.cells) for name, m in self.modules.items()}
        self.store = store
        self.clock = clock
        self.stale_seconds = stale_seconds
        # Read again from the request path, on the event loop (the gateway); False: the
        # owner calls refresh_if_stale itself (the replayer, which has no event loop).
        self.background = background
        self.placed: dict[str, dict[str, Placement]] = {m: {} for m in self.modules}
        # Each key's destination and each driver's cells, worked out once per copy of the
        # placements (hashing a key costs more than the rest of routing it).
        self._where: dict[tuple[str, str], Destination] = {}
        self._cells_of: dict[str, tuple[tuple[str, str], ...]] = {}
        self.copy = SharedCopy(
            self.load if store is not None and self.modules else None,
            self.apply,
            what="placement table",
            clock=clock,
            refresh_seconds=refresh_seconds,
            timeout_seconds=timeout_seconds,
        )

    @property
    def loaded(self) -> bool:
        return self.copy.loaded

    def celled(self, module: str) -> bool:
        return module in self.modules

    # --- routing ---------------------------------------------------------------------------

    def key_of(self, route: Route, driver_id: str | None, body: bytes) -> str | None:
        """The request's partition key, from where the route says (None: it has none)."""
        spec = route.cell_key
        if spec == "driver":
            return driver_id
        if spec is not None and spec.startswith("body:") and body:
            try:
                value = json.loads(body).get(spec[5:])
            except (ValueError, AttributeError):
                return None  # not a JSON object: the module answers it (422)
            return value if isinstance(value, str) and value else None
        return None

    def place(self, module: str, key: str | None) -> Destination:
        """The cell ``key`` of ``module`` lives in. A request with no key (one the module
        will refuse anyway, such as a body without the field) goes to the first cell."""
        self.keep_current()
        config = self.modules[module]
        if key is None:
            cell = self.cells[module][0]
            return Destination(config.unit(cell), cell)
        where = self._where.get((module, key))
        if where is None:
            placement = self.placed[module].get(key)
            if placement is None or placement.cell not in config.cells:
                cell = default_cell(key, self.cells[module])
                where = Destination(config.unit(cell), cell)
            else:
                where = Destination(config.unit(placement.cell), placement.cell, placement.moving)
            if len(self._where) >= MEMO_ENTRIES:
                self._where.clear()
            self._where[(module, key)] = where
        return where

    async def fresh(self) -> bool:
        """Whether this copy may route a request: read no longer than ``stale_seconds``
        ago, or read again now (within the store's deadline; an idle instance's first
        request pays one read). False: it may predate a move that has since copied the
        key's data elsewhere, so a write must wait (deferred)."""
        return await self.copy.fresh(self.stale_seconds)

    def is_fresh(self) -> bool:
        """Whether the copy was read less than ``stale_seconds`` ago (no read: cheap, and
        what most requests find)."""
        return self.copy.is_fresh(self.stale_seconds)

    def refresh_if_stale(self) -> bool:
        """For the replayer (synchronous): read the placements if a refresh is due. False:
        the copy is older than ``stale_seconds`` and could not be read, so no write may be
        routed by it."""
        if self.copy.read is not None and self.copy.due:
            try:
                self.copy.refresh()
            except Exception as exc:
                log.error("could not read placements (%r)", exc)
        return self.copy.read is None or self.clock() - self.copy.read_at < self.stale_seconds

    def cells_of(self, driver_id: str) -> tuple[tuple[str, str], ...]:
        """A driver's cell in each celled module, as ``(module, cell)`` pairs, for the
        identity context other modules read that module's data by (a gate pass for a
        driver's load reads the load from the driver's loads cell)."""
        cells = self._cells_of.get(driver_id)
        if cells is None:
            cells = tuple((m, self.place(m, driver_id).cell) for m in sorted(self.modules))
            if len(self._cells_of) >= MEMO_ENTRIES:
                self._cells_of.clear()
            self._cells_of[driver_id] = cells
        return cells

    # --- the copy --------------------------------------------------------------------------

    def load(self) -> dict[str, dict[str, Placement]]:
        """Every celled module's explicit placements, from the store (synchronous)."""
        store = self.store
        if store is None:
            return {}
        return {module: store.load(module) for module in self.modules}

    def apply(self, placed: dict[str, dict[str, Placement]]) -> None:
        for module, now in placed.items():
            before = self.placed.get(module, {})
            for key, placement in now.items():
                old = before.get(key)
                if old is None or old.revision != placement.revision:
                    log.warning(
                        "%s key %s: %s in %s%s (by %s)",
                        module,
                        logs.caller_hash(key),  # a driver id: never in a log line
                        placement.state,
                        placement.cell,
                        f", moving to {placement.to}" if placement.moving else "",
                        placement.updated_by or "?",
                    )
        self.placed = {m: dict(placed.get(m, {})) for m in self.modules}
        self._where, self._cells_of = {}, {}

    def refresh(self) -> None:
        """Read the placements now (synchronous: tests, tools)."""
        self.copy.refresh()

    async def load_at_start(self) -> None:
        """The first copy, before the instance routes (at start-up, or a Lambda
        environment's first request): a moved key is never sent to its default cell by a
        fresh instance. A store that does not answer in time leaves the defaults until the
        next refresh."""
        await self.copy.load_at_start()

    def keep_current(self) -> None:
        """On the request path: start a background read once per period."""
        if self.background:
            self.copy.keep_current()

    def view(self) -> dict[str, Any]:
        """As ``/ops/status`` shows it: each celled module's cells, partition keys placed
        explicitly, and the keys moving now."""
        return {
            module: {
                "cells": self.cells[module],
                "placed": len(self.placed[module]),
                "moving": sorted(k for k, p in self.placed[module].items() if p.moving),
            }
            for module in self.modules
        }
