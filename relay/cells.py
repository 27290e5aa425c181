"""``relay cells``: where a celled module's partition keys live, and moving one key's data
from its cell to another (docs/cells.md).

A celled module (loads) is N independent copies, ``cell-1``..``cell-N``, each with its own
tables; its partition key is the driver id. A key lives in its explicit placement's cell
(the placement table, :mod:`gateway.cells.placement`), else in its default cell
(:func:`~gateway.cells.placement.default_cell`).

A move (:meth:`CellMover.move`), step by step; every step can be run again, so a move
that died half-way is finished by running the same command again:

a. **moving**: the placement is written ``{state: moving, cell: <current>, to: <target>}``,
   conditional on the revision read (none: no placement yet). From then on the gateways
   keep reading the key from its current cell and defer its writes (202, the deferred
   queue), and the deferred replayer holds them.
b. **settle**: wait until every gateway has seen it, and every write it forwarded before
   has ended: twice the placement refresh interval plus the longest module deadline
   (:data:`SETTLE_SECONDS`), counted from the placement's ``updated_at``, so a rerun
   waits only what is left. After this no gateway writes the key's data in any cell (a
   module delivery stalled in its storage calls may still land in the source, up to the
   function's timeout later: steps d and f catch it).
c. **copy** the key's data from the source cell's tables to the target's: the idempotency
   records whose answer names the driver, then for each of the driver's loads (the loads
   table's ``by_driver`` index, each load read again consistently) its events (the events
   table, by ``load_id``), then the load itself. Each item is put with
   ``attribute_not_exists`` on its key, so a rerun finds what an earlier run copied and
   never adds a second item; one of the driver's items there that differs (an earlier
   run's copy of a load that changed since) is replaced by the source's, which is the
   one the gateways read while the key is moving. Another driver's load under the same id
   is never overwritten: the move stops.
d. **verify**: every source load is in the target, equal, with equal events; every record
   copied is there. (A write that outlived every deadline and landed in the source after
   the copy makes this fail: rerun the move, it copies it.)
e. **flip** the placement to ``{cell: <target>, state: placed}``, conditional on the
   moving revision: if anything else wrote the placement meanwhile the move stops
   (:class:`PlacementChanged`) and deletes nothing: the source still holds everything.
f. **settle** again (the gateways still read the source until they see the flip), then
   **delete** the key's items from the source, so no cell holds a stale duplicate: only
   the records the target has, and the loads the target has for the same driver at the
   same or a newer version (each load's events first, then the load, conditional on the
   version read); a load changed in the source after the copy is left there, and said.

A move to the cell the key is in already is a no-op; if an earlier move of it died after
its flip (step f not done), it finishes the cleanup. ``--abort`` of a move in progress
flips the placement back to ``{cell: <source>, state: placed}`` and deletes the copies
from the target (no gateway ever read them: a moving key is read from its source).

**A retried write after a move** (the same ``Idempotency-Key``) is applied once in the
new cell, twice over:

- The Powertools idempotency records are copied (step c). Their key does not depend on
  the cell: the loads app gives ``key_prefix="loads"`` (module_kit.idempotency), so the
  record id is ``loads#<sha256 of caller, route and key>`` in every cell, not the
  function's name (which carries the cell). The record holds no driver id to query by, so
  the source's completed records are found by a scan filtered on the driver in their
  stored answer (a load or an event: both name ``driver_id``). A retry then gets the first
  answer replayed (``Idempotent-Replayed: true``), as it would have in the old cell.
  In-progress records are not copied: a delivery still running after step b has lost
  its gateway call already, and its retry runs in the new cell.
- Without the record (expired, or a key the scan missed), the load item carries
  ``event_keys`` (the key ids of the events applied with a key: a digest of driver and key,
  ``modules.loads.service.event_key_id``) and is copied with it, and the events are
  copied with their ``seq``: a retried event finds its key on the load and answers the
  recorded event instead of applying it again. A retried assignment finds the load
  already there (``attribute_not_exists``): 409 ``already-assigned``, never a second load.

Writes the gateways deferred while the key was moving are replayed to the new cell once
it is ``placed``: they arrive there with their keys and are applied once the same way.
The target's table stream sees the copies: the gateway's fallback projector keeps a load
only if its version is newer, so it changes nothing, and it ignores the source's removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Any

import typer

from gateway.cells.placement import Placement, PlacementStore, PlacementTable, default_cell
from gateway.cells.router import DEFAULT_REFRESH_SECONDS

# The longest deadline of a module's call in the gateway (routes.toml: loads' 2 s): a
# write forwarded just before a gateway saw the key moving has ended after it.
MODULE_DEADLINE_SECONDS = 2.0
SETTLE_SECONDS = 2 * DEFAULT_REFRESH_SECONDS + MODULE_DEADLINE_SECONDS
CELLED_MODULES = ("loads",)
LOCAL_STAGE = "local"  # the stage the local stack deploys (relay.stack)

# The parameter under /relay/<stage>/<module>/<cell>/ naming each of a cell's tables
# (modules/loads/template.yaml with Cell set). Only the loads table's is published so far;
# until the others are, :func:`published_cells` falls back to the cell's stack (AWS) or
# the local stack's names.
CELL_TABLE_PARAMETERS = {
    "loads": "table-name",
    "events": "load-events-table-name",
    "idempotency": "idempotency-table-name",
}
# The cell stacks' logical ids of those tables (CloudFormation, where a parameter is missing).
CELL_TABLE_RESOURCES = {
    "loads": "LoadsTable",
    "events": "LoadEventsTable",
    "idempotency": "LoadsIdempotencyTable",
}
PLACEMENT_TABLE_PARAMETER = "/relay/{stage}/gateway/placement-table-name"
CELL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")  # gateway.routing.routes.CELL_NAME

Step = Callable[[str], None]


class CellsError(Exception):
    """A refused or stopped cells command; the message says why and what to do."""


class PlacementChanged(CellsError):
    """Another write changed the key's placement during the move (its revision moved)."""


@dataclass(frozen=True, slots=True)
class LoadsCellTables:
    """One cell's tables of the loads module (modules/loads/template.yaml)."""

    loads: str  # LoadsTable: load_id; GSI by_driver (driver_id, load_id)
    events: str  # LoadEventsTable: load_id + seq
    idempotency: str  # LoadsIdempotencyTable: Powertools records, id


@dataclass(frozen=True, slots=True)
class MoveResult:
    module: str
    key: str
    source: str
    target: str
    placement: Placement | None  # as stored at the end
    loads: int = 0  # copied or found copied
    events: int = 0
    records: int = 0  # idempotency records
    deleted: int = 0  # loads deleted from other cells
    noop: bool = False
    resumed: bool = False
    aborted: bool = False


class CellData:
    """The loads module's items of one driver in one cell."""

    def __init__(self, cell: str, tables: LoadsCellTables, dynamodb: Any) -> None:
        self.cell = cell
        self.tables = tables
        self._loads = dynamodb.Table(tables.loads)
        self._events = dynamodb.Table(tables.events)
        self._records = dynamodb.Table(tables.idempotency)

    def load_ids(self, driver: str) -> list[str]:
        """The driver's load ids, from the ``by_driver`` index (eventually consistent)."""
        from boto3.dynamodb.conditions import Key

        items = _pages(
            self._loads.query,
            IndexName="by_driver",
            KeyConditionExpression=Key("driver_id").eq(driver),
            ProjectionExpression="load_id",
        )
        return sorted({str(i["load_id"]) for i in items})

    def loads(self, driver: str) -> list[dict[str, Any]]:
        """The driver's loads, each read again from the table (consistent)."""
        out = []
        for load_id in self.load_ids(driver):
            item = self.load(load_id)
            if item is not None and item.get("driver_id") == driver:
                out.append(item)
        return out

    def load(self, load_id: str) -> dict[str, Any] | None:
        item = self._loads.get_item(Key={"load_id": load_id}, ConsistentRead=True).get("Item")
        return None if item is None else dict(item)

    def events(self, load_id: str) -> list[dict[str, Any]]:
        from boto3.dynamodb.conditions import Key

        return list(
            _pages(
                self._events.query,
                KeyConditionExpression=Key("load_id").eq(load_id),
                ConsistentRead=True,
            )
        )

    def records(self, driver: str) -> list[dict[str, Any]]:
        """The completed idempotency records whose stored answer names ``driver`` (a scan:
        a record's key is a hash of caller, route and key, with no driver to query by).
        Powertools stores the answer as ``json.dumps(..., sort_keys=True)``."""
        from boto3.dynamodb.conditions import Attr

        needle = json.dumps({"driver_id": driver})[1:-1]  # "driver_id": "D-1001"
        return list(
            _pages(
                self._records.scan,
                FilterExpression=Attr("status").eq("COMPLETED") & Attr("data").contains(needle),
                ConsistentRead=True,
            )
        )

    def record(self, record_id: str) -> dict[str, Any] | None:
        item = self._records.get_item(Key={"id": record_id}, ConsistentRead=True).get("Item")
        return None if item is None else dict(item)

    # --- writes ----------------------------------------------------------------------------

    def put_new(self, kind: str, item: dict[str, Any]) -> bool:
        """Put ``item`` into the ``kind`` table (loads, events, idempotency) if no item has
        its key: True if written, False if one was there."""
        table, key = self._table(kind)
        try:
            table.put_item(Item=item, ConditionExpression=f"attribute_not_exists({key})")
        except Exception as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def get(self, kind: str, item: dict[str, Any]) -> dict[str, Any] | None:
        table, _ = self._table(kind)
        found = table.get_item(Key=_key(kind, item), ConsistentRead=True).get("Item")
        return None if found is None else dict(found)

    def put_copy(self, kind: str, item: dict[str, Any], driver: str) -> str:
        """Copy ``item`` (of ``driver``'s data) here: ``new`` (no item had its key),
        ``same`` (an equal one was there: an earlier run copied it) or ``updated`` (this
        driver's item was there and differed: an earlier run's copy, replaced by the
        source's, which is authoritative while the key is moving). An item of another
        driver is never overwritten (:class:`CellsError`)."""
        if self.put_new(kind, item):
            return "new"
        there = self.get(kind, item)
        if there == item:
            return "same"
        load = there if kind == "loads" else self.load(str(item["load_id"]))
        if load is not None and load.get("driver_id") != driver:
            raise CellsError(
                f"{self.cell} holds load {item['load_id']} as another driver's: not "
                "overwritten, the move stops here (load ids must be unique across cells)"
            )
        table, _ = self._table(kind)
        table.put_item(Item=item)
        return "updated"

    def delete_load(self, driver: str, load: dict[str, Any]) -> bool:
        """Delete the load's events, then the load, if it is still ``driver``'s at the
        version read (``load``): False (the load is left) if it changed meanwhile."""
        for event in self.events(str(load["load_id"])):
            self._events.delete_item(Key=_key("events", event))
        try:
            self._loads.delete_item(
                Key={"load_id": load["load_id"]},
                ConditionExpression="driver_id = :d AND version = :v",
                ExpressionAttributeValues={":d": driver, ":v": load["version"]},
            )
        except Exception as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            return False
        return True

    def delete_record(self, record: dict[str, Any]) -> None:
        self._records.delete_item(Key={"id": record["id"]})

    def _table(self, kind: str) -> tuple[Any, str]:
        return {
            "loads": (self._loads, "load_id"),
            "events": (self._events, "seq"),
            "idempotency": (self._records, "id"),
        }[kind]


def _key(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    if kind == "events":
        return {"load_id": item["load_id"], "seq": item["seq"]}
    if kind == "loads":
        return {"load_id": item["load_id"]}
    return {"id": item["id"]}


def _pages(call: Callable[..., dict[str, Any]], **kwargs: Any) -> Iterator[dict[str, Any]]:
    while True:
        page = call(**kwargs)
        yield from page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _code(exc: Exception) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


class CellMover:
    """Shows, places and moves the partition keys of one celled module.

    ``cells``: each cell's tables, in cell order (they must be the cells the gateways route
    to: the default cell of a key depends on them). ``dynamodb``: a boto3 DynamoDB
    resource. ``clock``/``sleep``: wall-clock seconds (the placement's ``updated_at``) and
    the wait. ``on_step`` is called after each step of a move (``moving``, ``settled``,
    ``copied``, ``verified``, ``placed``, ``cleaned``): a test makes a move die there.
    """

    def __init__(
        self,
        module: str,
        cells: Mapping[str, LoadsCellTables],
        placements: PlacementStore,
        dynamodb: Any,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        settle_seconds: float | None = None,
        say: Callable[[str], None] = lambda _: None,
        on_step: Step = lambda _: None,
    ) -> None:
        if module not in CELLED_MODULES:
            raise CellsError(
                f"unknown celled module {module!r}: the celled modules are "
                + ", ".join(CELLED_MODULES)
            )
        if not cells:
            raise CellsError(f"{module} has no cells")
        self.module = module
        self.cells = dict(cells)
        self.placements = placements
        self.dynamodb = dynamodb
        self.clock = clock
        self.sleep = sleep
        self.settle_seconds = SETTLE_SECONDS if settle_seconds is None else settle_seconds
        self.say = say
        self.on_step = on_step

    # --- reads -----------------------------------------------------------------------------

    def data(self, cell: str) -> CellData:
        self._check_cell(cell)
        return CellData(cell, self.cells[cell], self.dynamodb)

    def where(self, key: str) -> tuple[Placement | None, str]:
        """The key's explicit placement (None: none) and the cell it is read from."""
        placement = self.placements.get(self.module, key)
        if placement is not None and placement.cell in self.cells:
            return placement, placement.cell
        return placement, default_cell(key, list(self.cells))

    def holders(self, key: str) -> dict[str, int]:
        """The cells holding loads of ``key``: cell -> how many."""
        out = {}
        for cell in self.cells:
            if count := len(self.data(cell).load_ids(key)):
                out[cell] = count
        return out

    def show(self) -> dict[str, Any]:
        placed = self.placements.load(self.module)
        return {
            "module": self.module,
            "cells": list(self.cells),
            "placements": [placed[k] for k in sorted(placed)],
            "moving": [placed[k] for k in sorted(placed) if placed[k].moving],
        }

    # --- place -----------------------------------------------------------------------------

    def place(self, key: str, cell: str, *, reason: str, by: str) -> MoveResult:
        """Place a key that has no data yet in ``cell``. A key with data in any cell is
        refused (``relay cells move`` copies it). It goes through a move all the same
        (moving, settle, flip), so a write in flight to its old cell is not stranded."""
        self._check_cell(cell)
        placement, current = self.where(key)
        if placement is not None and placement.moving:
            raise CellsError(
                f"{self.module} key {key} is moving from {placement.cell} to {placement.to}: "
                f"finish it with `relay cells move {self.module} {key} --to {placement.to}` "
                "(or --abort it) first"
            )
        if current == cell:
            return self.move(key, cell, reason=reason, by=by)  # the no-op, with its message
        if held := self.holders(key):
            where = ", ".join(f"{n} load(s) in {c}" for c, n in held.items())
            raise CellsError(
                f"{self.module} key {key} has data ({where}): `place` is for a key with no "
                f"data yet; use `relay cells move {self.module} {key} --to {cell}`"
            )
        return self.move(key, cell, reason=reason, by=by)

    # --- move ------------------------------------------------------------------------------

    def move(self, key: str, to: str, *, reason: str, by: str) -> MoveResult:
        """Move ``key``'s data to cell ``to`` (the module docstring's steps a to f); rerun
        it to finish a move that stopped."""
        self._check_cell(to)
        placement, current = self.where(key)
        if placement is not None and placement.moving:
            if placement.to != to:
                raise CellsError(
                    f"{self.module} key {key} is already moving from {placement.cell} to "
                    f"{placement.to} (revision {placement.revision}, by "
                    f"{placement.updated_by or '?'}): finish that move with --to "
                    f"{placement.to}, or --abort it"
                )
            if placement.cell not in self.cells:
                raise CellsError(f"{key} is moving from {placement.cell}, which is not a cell")
            self.say(
                f"resuming the move of {key} from {placement.cell} to {to} "
                f"(revision {placement.revision})"
            )
            return self._run(placement, resumed=True)
        if current == to:
            return self._finish_cleanup(key, placement, to)
        self._check_sources(key, current, to)
        moving = self.placements.put(
            Placement(
                module=self.module,
                key=key,
                cell=current,
                state="moving",
                to=to,
                updated_by=by,
                reason=reason,
                updated_at=self.clock(),
            ),
            expected_revision=None if placement is None else placement.revision,
        )
        if moving is None:
            raise PlacementChanged(
                f"{self.module} key {key}: its placement changed while the move started "
                f"({self._now_placed(key)}); nothing was copied. Check `relay cells show` "
                "and run the move again"
            )
        self.say(f"{key}: moving from {current} to {to} (revision {moving.revision})")
        self.on_step("moving")
        return self._run(moving, resumed=False)

    def abort(self, key: str, *, reason: str, by: str) -> MoveResult:
        """Stop a move in progress: the key is placed back in its source cell (which holds
        all of its data: nothing is deleted there before the flip) and the copies made in
        the target are deleted (no gateway read them)."""
        placement = self.placements.get(self.module, key)
        if placement is None or not placement.moving:
            raise CellsError(f"{self.module} key {key} is not moving: nothing to abort")
        assert placement.to is not None
        back = self.placements.put(
            replace(
                placement,
                state="placed",
                to=None,
                updated_by=by,
                reason=reason,
                updated_at=self.clock(),
            ),
            expected_revision=placement.revision,
        )
        if back is None:
            raise PlacementChanged(
                f"{self.module} key {key}: its placement changed meanwhile "
                f"({self._now_placed(key)}); nothing was aborted"
            )
        self.say(f"{key}: move aborted, placed in {placement.cell} again")
        deleted = self._cleanup(key, placement.cell, [placement.to])
        return MoveResult(
            self.module, key, placement.cell, placement.to, back, deleted=deleted, aborted=True
        )

    def _run(self, moving: Placement, *, resumed: bool) -> MoveResult:
        key, source, target = moving.key, moving.cell, moving.to
        assert target is not None
        self._settle(moving.updated_at, "every gateway defers the key's writes")
        self.on_step("settled")
        loads, events, records = self._copy(key, source, target)
        self.say(
            f"{key}: copied {loads} load(s), {events} event(s) and {records} idempotency "
            f"record(s) to {target}"
        )
        self.on_step("copied")
        self._verify(key, source, target)
        self.on_step("verified")
        placed = self.placements.put(
            replace(moving, cell=target, state="placed", to=None, updated_at=self.clock()),
            expected_revision=moving.revision,
        )
        if placed is None:
            raise PlacementChanged(
                f"{self.module} key {key}: its placement changed during the move (it was "
                f"revision {moving.revision}; now {self._now_placed(key)}). Nothing was "
                f"deleted: {source} still holds the key's data, and the copies in {target} "
                "stay until the key is placed (`relay cells move` to the cell it is placed "
                "in then removes them from the other cells)"
            )
        self.say(f"{key}: placed in {target} (revision {placed.revision})")
        self.on_step("placed")
        deleted = 0
        if loads or records:
            self._settle(placed.updated_at, f"every gateway reads the key from {target}")
            deleted = self._cleanup(key, target, [source])
        self.on_step("cleaned")
        return MoveResult(
            self.module,
            key,
            source,
            target,
            placed,
            loads=loads,
            events=events,
            records=records,
            deleted=deleted,
            resumed=resumed,
        )

    def _finish_cleanup(self, key: str, placement: Placement | None, cell: str) -> MoveResult:
        """A move to the cell the key is in: nothing to do, but the leftovers of an
        earlier move that stopped after its flip, in other cells, are deleted."""
        others = self.held_elsewhere(key, cell)
        if not others:
            self.say(f"{self.module} key {key} is in {cell} already: nothing to do")
            return MoveResult(self.module, key, cell, cell, placement, noop=True)
        self.say(
            f"{self.module} key {key} is in {cell} already; {', '.join(others)} still "
            "hold(s) its data from a move that stopped: deleting what it copied"
        )
        if placement is not None:
            self._settle(placement.updated_at, f"every gateway reads the key from {cell}")
        deleted = self._cleanup(key, cell, others)
        return MoveResult(self.module, key, cell, cell, placement, deleted=deleted, noop=True)

    def held_elsewhere(self, key: str, cell: str) -> list[str]:
        return [c for c in self.holders(key) if c != cell]

    # --- steps -----------------------------------------------------------------------------

    def _check_sources(self, key: str, current: str, to: str) -> None:
        """Before a move starts: the key's data is only in its current cell (else the cells
        this tool was given are not the gateways', or an earlier move left data: both
        need a look first), and no load id of it is another driver's in the target."""
        elsewhere = self.held_elsewhere(key, current)
        if elsewhere:
            raise CellsError(
                f"{self.module} key {key} is read from {current}, but "
                f"{', '.join(elsewhere)} also hold(s) loads of it: are these the gateways' "
                f"cells ({', '.join(self.cells)})? Run `relay cells move {self.module} {key} "
                f"--to {current}` to finish an earlier move's cleanup first"
            )
        target = self.data(to)
        for load_id in self.data(current).load_ids(key):
            there = target.load(load_id)
            if there is not None and there.get("driver_id") != key:
                raise CellsError(
                    f"load {load_id} of {key} exists in {to} as another driver's: "
                    "not moved (load ids must be unique across cells)"
                )

    def _settle(self, since: float, what: str) -> None:
        left = since + self.settle_seconds - self.clock()
        if left > 0:
            self.say(f"waiting {left:.1f} s until {what}")
            self.sleep(left)

    def _copy(self, key: str, source: str, target: str) -> tuple[int, int, int]:
        src, dst = self.data(source), self.data(target)
        records = 0
        for record in src.records(key):
            if not dst.put_new("idempotency", record) and dst.get("idempotency", record) != record:
                # The same caller, route and key answered in the target before: its answer
                # stands (it is what that caller was told there).
                self.say(f"idempotency record {record['id']} already in {target}: kept")
            records += 1
        loads = events = 0
        for load in src.loads(key):
            for event in src.events(str(load["load_id"])):
                self._put_copy(dst, "events", event, key)
                events += 1
            self._put_copy(dst, "loads", load, key)
            loads += 1
        return loads, events, records

    def _put_copy(self, dst: CellData, kind: str, item: dict[str, Any], key: str) -> None:
        if dst.put_copy(kind, item, key) == "updated":
            self.say(f"{kind} item {_key(kind, item)} in {dst.cell} replaced by the source's")

    def _verify(self, key: str, source: str, target: str) -> None:
        src, dst = self.data(source), self.data(target)
        for load in src.loads(key):
            load_id = str(load["load_id"])
            if dst.load(load_id) != load:
                raise CellsError(
                    f"verify: load {load_id} in {target} is not {source}'s (did it change "
                    "after the copy?): rerun the move, it copies it again"
                )
            if dst.events(load_id) != src.events(load_id):
                raise CellsError(
                    f"verify: the events of load {load_id} differ in {target}: rerun the move"
                )
        for record in src.records(key):
            if dst.record(str(record["id"])) is None:
                raise CellsError(f"verify: idempotency record {record['id']} not in {target}")

    def _cleanup(self, key: str, keep: str, cells: Iterable[str]) -> int:
        """Delete ``key``'s data from ``cells`` where ``keep`` (the cell it is placed in)
        holds it too: the idempotency records ``keep`` has, then each load ``keep`` has at
        the same or a newer version, its events first. A load ``keep`` does not have, or
        has older (a write that outlived every deadline landed in the old cell after the
        copy), is left there and said. Returns the loads deleted."""
        kept = self.data(keep)
        deleted = 0
        for cell in cells:
            if cell == keep:
                continue
            data = self.data(cell)
            left = []
            for record in data.records(key):
                if kept.record(str(record["id"])) is not None:
                    data.delete_record(record)
            count = 0
            for load in data.loads(key):
                there = kept.load(str(load["load_id"]))
                if (
                    there is None
                    or there.get("driver_id") != key
                    or load["version"] > there["version"]
                    or not data.delete_load(key, load)
                ):
                    left.append(str(load["load_id"]))
                    continue
                count += 1
            self.say(f"{key}: deleted {count} load(s) from {cell}")
            if left:
                self.say(
                    f"{cell} still holds load(s) {', '.join(left)} of {key} that {keep} "
                    "does not, or holds older: left there for a look (rerun the move to "
                    f"{keep} once they are settled)"
                )
            deleted += count
        return deleted

    def _now_placed(self, key: str) -> str:
        now = self.placements.get(self.module, key)
        if now is None:
            return "no placement"
        return (
            f"{now.state} in {now.cell}"
            + (f" to {now.to}" if now.moving else "")
            + f", revision {now.revision}, by {now.updated_by or '?'}"
        )

    def _check_cell(self, cell: str) -> None:
        if cell not in self.cells:
            raise CellsError(
                f"unknown cell {cell!r} of {self.module}: its cells are {', '.join(self.cells)}"
            )


# --- where the tables are ------------------------------------------------------------------


def published_cells(
    stage: str,
    module: str,
    *,
    ssm: Any,
    cells: Sequence[str] | None = None,
    fallback: Callable[[str, str], str | None] | None = None,
) -> dict[str, LoadsCellTables]:
    """The one place that says where each cell's tables are: the cells of ``module`` the
    stage's cell stacks publish (``/relay/<stage>/<module>/<cell>/table-name``), each with
    the tables named by :data:`CELL_TABLE_PARAMETERS` under that path. ``cells``: only
    these, each of which must be published (the gateways' cells: the default cell of a key
    depends on them). ``fallback(cell, kind)``: a table's name where its parameter is not
    published (the cell stacks publish only the loads table's name today)."""
    prefix = f"/relay/{stage}/{module}/"
    found: dict[str, dict[str, str]] = {}
    kwargs: dict[str, Any] = {"Path": prefix, "Recursive": True}
    while True:
        page = ssm.get_parameters_by_path(**kwargs)
        for parameter in page.get("Parameters", []):
            cell, _, name = str(parameter["Name"])[len(prefix) :].partition("/")
            if name and CELL_NAME.match(cell):
                found.setdefault(cell, {})[name] = str(parameter["Value"])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    published = [c for c, v in found.items() if CELL_TABLE_PARAMETERS["loads"] in v]
    if cells is not None:
        if missing := [c for c in cells if c not in published]:
            raise CellsError(
                f"{module} cell(s) {', '.join(missing)} publish no "
                f"{prefix}<cell>/{CELL_TABLE_PARAMETERS['loads']}: are their stacks deployed?"
            )
        published = list(cells)
    if not published:
        raise CellsError(
            f"no cell of {module} is published under {prefix}<cell>/ "
            f"({CELL_TABLE_PARAMETERS['loads']}): is the stage celled, and its cell stacks "
            "deployed?"
        )
    out = {}
    for cell in sorted(published, key=_cell_order):
        names = {}
        for kind, parameter in CELL_TABLE_PARAMETERS.items():
            table = found[cell].get(parameter)
            if table is None and fallback is not None:
                table = fallback(cell, kind)
            if table is None:
                raise CellsError(f"{prefix}{cell}/{parameter} does not exist")
            names[kind] = table
        out[cell] = LoadsCellTables(**names)
    return out


def local_table_name(cell: str, kind: str) -> str:
    """A cell's table in the local stack, where no parameter names it: as
    :class:`relay.cloud.LocalCloud` names a cell stack's resources
    (``relay-<cell>-<LogicalId>``)."""
    return f"relay-{cell}-{CELL_TABLE_RESOURCES[kind]}"


def stack_table_name(stage: str, module: str, cloudformation: Any) -> Callable[[str, str], str]:
    """A cell's table in AWS, where no parameter names it: the physical id of its logical
    id (:data:`CELL_TABLE_RESOURCES`) in the cell's stack ``relay-<stage>-<module>-<cell>``."""

    def name(cell: str, kind: str) -> str:
        detail = cloudformation.describe_stack_resource(
            StackName=f"relay-{stage}-{module}-{cell}",
            LogicalResourceId=CELL_TABLE_RESOURCES[kind],
        )["StackResourceDetail"]
        return str(detail["PhysicalResourceId"])

    return name


def gateway_cells(stage: str, module: str, *, ssm: Any, lambda_client: Any) -> list[str]:
    """The cells the stage's gateway routes ``module`` to: its function's
    ``RELAY_UPSTREAM_<MODULE>`` (``cell-1=<url>,cell-2=<url>``; template.yaml)."""
    arn = ssm.get_parameter(Name=f"/relay/{stage}/gateway/function-arn")["Parameter"]["Value"]
    config = lambda_client.get_function_configuration(FunctionName=arn)
    value = (
        config.get("Environment", {}).get("Variables", {}).get(f"RELAY_UPSTREAM_{module.upper()}")
    )
    if not value or "=" not in value:
        raise CellsError(f"the {stage} gateway does not route {module} to cells: is it celled?")
    return [part.partition("=")[0].strip() for part in value.split(",") if part.strip()]


def placement_table_name(stage: str, *, ssm: Any) -> str:
    name = PLACEMENT_TABLE_PARAMETER.format(stage=stage)
    try:
        return str(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except Exception as exc:
        if _code(exc) == "ParameterNotFound":
            raise CellsError(f"{name} does not exist: is the gateway stack celled?") from None
        raise


def _cell_order(cell: str) -> tuple[str, int, str]:
    head, _, number = cell.rpartition("-")
    return (head, int(number), cell) if number.isdigit() else (cell, 0, cell)


# --- the command line (`relay cells`, registered by relay.cli) ------------------------------


class Target(StrEnum):
    local = "local"
    aws = "aws"


cells_app = typer.Typer(
    help="The celled modules' cells: where each driver's data lives, and moving it.",
    no_args_is_help=True,
)

ModuleArg = Annotated[str, typer.Argument(help="The celled module (loads)")]
TargetOpt = Annotated[
    Target, typer.Option(help="local: the running local stack; aws: a stage (AWS_REGION)")
]
StageOpt = Annotated[str | None, typer.Option(help="aws: the stage")]
ByOpt = Annotated[str | None, typer.Option(help="Who (kept with the placement)")]


def _mover(module: str, target: Target, stage: str | None, **kwargs: Any) -> CellMover:
    """The mover of ``module`` on the local stack, or on an AWS stage: the cells and their
    tables from SSM, the placement table from the gateway stack's parameter."""
    import boto3

    if module not in CELLED_MODULES:
        raise typer.BadParameter(
            f"{module!r} is not celled (celled: {', '.join(CELLED_MODULES)})", param_hint="MODULE"
        )
    if target is Target.aws:
        from .release.aws import client_config, make_client, region_from_environment

        if not stage:
            raise typer.BadParameter("required with --target aws", param_hint="--stage")
        region = region_from_environment()
        ssm = make_client("ssm", region)
        dynamodb = boto3.resource("dynamodb", region_name=region, config=client_config())
        routed = gateway_cells(stage, module, ssm=ssm, lambda_client=make_client("lambda", region))
        fallback = stack_table_name(stage, module, make_client("cloudformation", region))
    else:
        if stage is not None:
            raise typer.BadParameter("only with --target aws", param_hint="--stage")
        from .stack import LOCAL_CREDENTIALS, STATE_DIR

        path = STATE_DIR / "stack.json"
        if not path.exists():
            raise typer.BadParameter("the local stack is not running: start it with `make dev`")
        state = json.loads(path.read_text())
        routed = state.get("cells", {}).get(module)
        if not routed:
            raise CellsError(
                f"the running local stack's {module} is not celled: start it with cells "
                "(`relay dev --cells N`)"
            )
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=LOCAL_CREDENTIALS["AWS_REGION"],
        )
        ssm = session.client("ssm", endpoint_url=state["emulator_url"])
        dynamodb = session.resource("dynamodb", endpoint_url=state["emulator_url"])
        stage = LOCAL_STAGE
        fallback = local_table_name
    cells = published_cells(stage, module, ssm=ssm, cells=routed, fallback=fallback)
    store = PlacementTable(placement_table_name(stage, ssm=ssm), dynamodb=dynamodb)
    return CellMover(module, cells, store, dynamodb, **kwargs)


def _by(by: str | None) -> str:
    return by or f"relay cells ({os.environ.get('USER', '?')})"


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """A refused or stopped command: its message, exit 1. Usage errors pass through."""
    try:
        yield
    except (typer.Exit, typer.BadParameter):
        raise
    except CellsError as exc:
        typer.echo(f"relay cells: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # an AWS call, no region or credentials...
        typer.echo(
            f"relay cells: {type(exc).__name__}: {exc}\n(a move stopped by this is finished "
            "by running the same command again)",
            err=True,
        )
        raise typer.Exit(1) from None


def _say(message: str) -> None:
    typer.echo(f"-- {message}")


@cells_app.command("show")
def show(
    module: ModuleArg = "loads",
    driver: Annotated[
        str | None, typer.Option(help="Also where this driver is, and which cells hold data")
    ] = None,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """The module's cells, its explicit placements, and the keys moving now."""
    with _reported():
        mover = _mover(module, target, stage)
        view = mover.show()
        typer.echo(f"{module}: {len(view['cells'])} cell(s): {' '.join(view['cells'])}")
        placements: list[Placement] = view["placements"]
        typer.echo(f"explicit placements: {len(placements)}")
        if placements:
            typer.echo(
                f"  {'KEY':<16} {'CELL':<10} {'STATE':<7} {'TO':<10} {'REV':>4}  BY / REASON"
            )
        for p in placements:
            typer.echo(
                f"  {p.key:<16} {p.cell:<10} {p.state:<7} {p.to or '-':<10} {p.revision:>4}  "
                f"{p.updated_by or '?'} / {p.reason or '-'}"
            )
        moving = view["moving"]
        typer.echo(
            "moving: "
            + (", ".join(f"{p.key} ({p.cell} -> {p.to})" for p in moving) if moving else "none")
        )
        if driver:
            placement, cell = mover.where(driver)
            how = "default" if placement is None else f"placed, revision {placement.revision}"
            held = mover.holders(driver)
            typer.echo(
                f"{driver}: read from {cell} ({how}); loads in: "
                + (", ".join(f"{c} ({n})" for c, n in held.items()) or "no cell")
            )


@cells_app.command("place")
def place(
    module: ModuleArg,
    driver: Annotated[str, typer.Argument(help="The partition key: a driver id")],
    cell: Annotated[str, typer.Argument(help="The cell, e.g. cell-2")],
    reason: Annotated[str, typer.Option(help="Why (kept with the placement)")],
    by: ByOpt = None,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """Place a driver with no data yet in a cell (a driver with data: `relay cells move`)."""
    with _reported():
        mover = _mover(module, target, stage, say=_say)
        result = mover.place(driver, cell, reason=reason, by=_by(by))
        if not result.noop:
            typer.echo(f"{module} {driver}: placed in {result.target}")


@cells_app.command("move")
def move(
    module: ModuleArg,
    driver: Annotated[str, typer.Argument(help="The partition key: a driver id")],
    reason: Annotated[str, typer.Option(help="Why (kept with the placement)")],
    to: Annotated[str | None, typer.Option("--to", help="The cell to move to")] = None,
    abort: Annotated[
        bool, typer.Option("--abort", help="Stop the driver's move in progress instead")
    ] = False,
    by: ByOpt = None,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """Move a driver's data to another cell: the placement turns `moving` (the gateways
    defer the driver's writes), the data is copied and checked, the placement flips to the
    new cell, then the old cell's copy is deleted. Run it again to finish a move that
    stopped; --abort places the driver back in the cell it was moving from. Exits 0 when
    done (or nothing to do), 1 when refused or stopped."""
    if (to is None) == (not abort):
        raise typer.BadParameter("give --to <cell>, or --abort", param_hint="--to")
    with _reported():
        mover = _mover(module, target, stage, say=_say)
        if abort:
            result = mover.abort(driver, reason=reason, by=_by(by))
            typer.echo(f"{module} {driver}: move aborted; placed in {result.source}")
            return
        assert to is not None
        result = mover.move(driver, to, reason=reason, by=_by(by))
        if not result.noop:
            typer.echo(
                f"{module} {driver}: moved from {result.source} to {result.target} "
                f"({result.loads} load(s), {result.events} event(s), {result.records} "
                f"idempotency record(s); {result.deleted} load(s) deleted from {result.source})"
            )
