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

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import aws_calls
from gateway.cells.placement import Placement, PlacementSource, default_cell
from gateway.routing.routes import ModuleConfig, Route
from module_kit import logs

log = logging.getLogger("relay.gateway.cells")

DEFAULT_REFRESH_SECONDS = 1.0
# A request to a celled module is routed by a copy at most this old: an instance whose copy
# is older (idle, or the store did not answer) reads the placements first; if it cannot,
# a write is deferred and a read uses the last copy. ``relay cells move`` waits longer than
# this before it copies a key, and again before it deletes the old cell's copy.
DEFAULT_STALE_SECONDS = 3.0


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
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self.stale_seconds = stale_seconds
        # Read again from the request path, on the event loop (the gateway); False: the
        # owner calls refresh_if_stale itself (the replayer, which has no event loop).
        self.background = background
        self.placed: dict[str, dict[str, Placement]] = {m: {} for m in self.modules}
        self._loaded_at = -math.inf  # the last read started (one per refresh period)
        self._read_at = -math.inf  # the last read that succeeded: the copy's age
        self._refreshing: asyncio.Future[dict[str, dict[str, Placement]]] | None = None
        self._first_load: asyncio.Future[None] | None = None
        self.loaded = store is None or not self.modules

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
        placement = self.placed[module].get(key)
        if placement is None or placement.cell not in config.cells:
            cell = default_cell(key, self.cells[module])
            return Destination(config.unit(cell), cell)
        return Destination(config.unit(placement.cell), placement.cell, placement.moving)

    async def fresh(self) -> bool:
        """Whether this copy may route a request: read no longer than ``stale_seconds``
        ago, or read again now (within the store's deadline; an idle instance's first
        request pays one read). False: it may predate a move that has since copied the
        key's data elsewhere, so a write must wait (deferred)."""
        now = self.clock()
        if self.store is None or now - self._read_at < self.stale_seconds:
            return True
        if self._refreshing is not None:  # the background read this request started
            try:
                await asyncio.wait_for(asyncio.shield(self._refreshing), self.timeout_seconds)
            except Exception:
                return False  # said by its own callback
            return self.clock() - self._read_at < self.stale_seconds
        if now - self._loaded_at < self.refresh_seconds:
            return False  # a read failed moments ago: not one per write
        self._loaded_at = now
        try:
            placed = await aws_calls.call(
                self.load, timeout=self.timeout_seconds, what="placement table"
            )
        except Exception as exc:
            log.error("could not read placements (%r): routing by the last copy", exc)
            return False
        self.apply(placed)
        return True

    def refresh_if_stale(self) -> bool:
        """For the replayer (synchronous): read the placements if the copy is older than
        ``refresh_seconds``. False: it is older than ``stale_seconds`` and could not
        be read, so no write may be routed by it."""
        if self.store is None or self.clock() - self._loaded_at < self.refresh_seconds:
            return self.store is None or self.clock() - self._read_at < self.stale_seconds
        try:
            self.refresh()
        except Exception as exc:
            self._loaded_at = self.clock()
            log.error("could not read placements (%r)", exc)
            return self.clock() - self._read_at < self.stale_seconds
        return True

    def cells_of(self, driver_id: str) -> dict[str, str]:
        """A driver's cell in each celled module (module -> cell), for the identity context
        other modules read that module's data by (a gate pass for a driver's load reads
        the load from the driver's loads cell)."""
        return {m: self.place(m, driver_id).cell for m in self.modules}

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
        self._read_at = self.clock()

    def refresh(self) -> None:
        """Read the placements now (synchronous: tests, tools)."""
        if self.store is not None and self.modules:
            self.apply(self.load())
            self._loaded_at = self.clock()
            self.loaded = True

    async def load_at_start(self) -> None:
        """The first copy, before the instance routes (at start-up, or a Lambda
        environment's first request): a moved key is never sent to its default cell by a
        fresh instance. A store that does not answer in time leaves the defaults until the
        next refresh."""
        if self.loaded:
            return
        if self._first_load is None:
            self._first_load = asyncio.ensure_future(self._load_first())
        await asyncio.shield(self._first_load)

    async def _load_first(self) -> None:
        try:
            placed = await aws_calls.call(
                self.load, timeout=self.timeout_seconds * 4, what="placement table"
            )
        except Exception as exc:
            log.error("could not read cell placements at start-up (%r); defaults only", exc)
            self._loaded_at = self.clock()
            return
        finally:
            self.loaded = True
        self._loaded_at = self.clock()
        self.apply(placed)

    def keep_current(self) -> None:
        """On the request path: start a background read once per period."""
        if self.background and self.clock() - self._loaded_at >= self.refresh_seconds:
            self._refresh_in_background()

    def _refresh_in_background(self) -> None:
        if self._refreshing is not None or self.store is None or not self.modules:
            return
        self._loaded_at = self.clock()  # one refresh per period, even if it fails

        def done(future: asyncio.Future[dict[str, dict[str, Placement]]]) -> None:
            self._refreshing = None
            if future.cancelled():
                return
            if future.exception() is not None:
                log.error("could not read placements (%r); keeping the last", future.exception())
                return
            self.apply(future.result())

        self._refreshing = asyncio.ensure_future(
            aws_calls.call(self.load, timeout=self.timeout_seconds, what="placement table")
        )
        self._refreshing.add_done_callback(done)

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
