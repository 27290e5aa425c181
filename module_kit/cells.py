"""Per-cell settings of a celled module, and the cell a request may read (docs/cells.md).

A celled module is N independent copies (``cell-1``..``cell-N``), each with its own
tables, partitioned by driver id. A module reading another module's celled table (gatepass
and navigate read the loads table) is given that table per cell, in cell order::

    LOADS_TABLE=cell-1=relay-loads-cell-1,cell-2=relay-loads-cell-2

and, on an uncelled stage, a plain table name (``LOADS_TABLE=relay-loads``).
:func:`parse_cells` reads either form and refuses anything else with a message naming
the setting, so a malformed value stops the function at start-up, not at a request.

The gateway decides each driver's cell and names it in the signed identity context
(``IdentityContext.cells``: module -> cell). :meth:`CellTables.tables_for` turns an
identity into the tables a request reads, in order; the first that has the item answers:

- The identity names a cell of the module: that cell's table, and only it. A driver's
  request never reads another cell: a load id that exists only in another cell is not
  found, exactly as a missing one.
- It names a cell this setting does not list (the gateway knows a cell this function was
  not deployed with, or the stage is uncelled here but celled in the gateway): a 503
  (:class:`CellUnavailableError`), logged as an error. Not a 4xx (the caller did nothing
  wrong), not a guess at another cell or the one uncelled table (that would serve the
  driver data that is not their cell's, stale or absent), and not a 500: it is the
  deployment being out of step, which ends when it converges, so the caller retries and
  the gateway applies its retry and fallback rules for an unavailable module meanwhile.
- It names no cell, on an uncelled stage: the one table.
- It names no cell, on a celled stage, for staff (gate, dispatch, ops carry no cell: no
  driver is their partition key): every cell's table in cell order, until the item is
  found. This cross-cell read is the staff callers' only; it relies on a key's data
  living in one cell at a time.
- It names no cell, on a celled stage, for a driver: a 503 too. The gateway names a
  driver's cell on every celled stage; reading every cell on a driver's behalf is exactly
  the cross-cell read a driver must never get.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from module_kit import logs
from shared_contracts.errors import UnavailableError
from shared_contracts.identity import IdentityContext, Role

log = logging.getLogger("relay.cells")

T = TypeVar("T")

# Cell names as the gateway's route table accepts them (gateway.routing.routes.CELL_NAME).
CELL_NAME = re.compile(r"^[a-z][a-z0-9-]{0,15}$")
# A DynamoDB table name, or a table ARN (TableName accepts both); no "," or "=" either way.
TABLE_NAME = re.compile(r"^(?:[A-Za-z0-9_.-]{1,255}|arn:aws[a-z-]*:dynamodb:[^\s,=]+)$")


LOADS_MODULE = "loads"  # the celled module others read (its identity.cells key)


class CellConfigError(ValueError):
    """A per-cell setting that is neither one table name nor ``cell=table,...``."""


class CellUnavailableError(UnavailableError):
    """The request's cell is not one this function can read (503, ``cell-unavailable``)."""

    code = "cell-unavailable"


def parse_cells(value: str, *, setting: str) -> dict[str, str]:
    """``value`` as cell -> table name, in the order written; ``{}`` for a plain table name
    (an uncelled stage). :class:`CellConfigError`, naming ``setting``, for anything else:
    an empty value or part, a name that is no table name, a cell written twice."""
    text = value.strip()
    if not text:
        raise CellConfigError(f"{setting} is empty: give a table name or cell-1=<table>,...")
    if "=" not in text and "," not in text:
        _check_table(text, setting, value)
        return {}
    cells: dict[str, str] = {}
    for part in text.split(","):
        cell, sep, table = (p.strip() for p in part.partition("="))
        if not sep:
            raise CellConfigError(
                f"{setting}={value!r}: {part.strip()!r} is not cell=table "
                "(a celled value names every table's cell: cell-1=<table>,cell-2=<table>)"
            )
        if not CELL_NAME.match(cell):
            raise CellConfigError(
                f"{setting}={value!r}: cell name {cell!r} is not {CELL_NAME.pattern}"
            )
        if cell in cells:
            raise CellConfigError(f"{setting}={value!r}: cell {cell} is given twice")
        cells[cell] = _check_table(table, setting, value)
    return cells


def _check_table(table: str, setting: str, value: str) -> str:
    if not TABLE_NAME.match(table):
        raise CellConfigError(f"{setting}={value!r}: {table!r} is not a DynamoDB table name")
    return table


def driver_identity(driver: IdentityContext | str) -> IdentityContext:
    """``driver`` as an identity. A bare driver id (callers outside a request: tools,
    tests) is a driver whose identity names no cell: right on an uncelled stage only."""
    if isinstance(driver, IdentityContext):
        return driver
    return IdentityContext(sub=driver, role=Role.DRIVER, driver_id=driver)


@dataclass(frozen=True, slots=True)
class CellTables:
    """One table of a celled module per cell, or its one table on an uncelled stage, and
    which of them a request reads (the rules are the module docstring's)."""

    module: str  # the celled module whose table this is: the key of ``identity.cells``
    table: str = ""  # uncelled: the one table
    cells: Mapping[str, str] = field(default_factory=dict)  # celled: cell -> table, in order

    @classmethod
    def parse(cls, module: str, value: str, *, setting: str) -> CellTables:
        """From a setting's value (:func:`parse_cells`); :class:`CellConfigError` if malformed."""
        cells = parse_cells(value, setting=setting)
        return cls(module, cells=cells) if cells else cls(module, table=value.strip())

    @property
    def celled(self) -> bool:
        return bool(self.cells)

    def tables_for(self, identity: IdentityContext) -> tuple[str, ...]:
        """The tables ``identity``'s request reads, in order: its cell's only, if it names
        one; with none, the one table (uncelled) or, for staff only, every cell's (celled).
        :class:`CellUnavailableError` if the named cell is not one of this setting's, or a
        driver names none on a celled stage."""
        cell = identity.cells.get(self.module)
        if cell is not None:
            table = self.cells.get(cell)
            if table is None:
                known = ", ".join(self.cells) or "none: this stage is uncelled here"
                log.error(
                    "%s %s is placed in %s cell %s, which this function cannot read "
                    "(its cells: %s)",
                    identity.role.value,
                    logs.caller_hash(identity.sub),  # never a driver id in a log line
                    self.module,
                    cell,
                    known,
                )
                raise CellUnavailableError(
                    f"cannot reach the {self.module} cell {cell} right now; retry shortly"
                )
            return (table,)
        if not self.celled:
            return (self.table,)
        if identity.role is Role.DRIVER:
            log.error(
                "driver %s has no %s cell in their identity, but %s is celled here",
                logs.caller_hash(identity.sub),
                self.module,
                self.module,
            )
            raise CellUnavailableError(
                f"cannot tell which {self.module} cell holds your data right now; retry shortly"
            )
        return tuple(self.cells.values())  # staff: a cross-cell read, in cell order

    def read(self, identity: IdentityContext, get: Callable[[str], T | None]) -> T | None:
        """``get(table)`` for each of :meth:`tables_for` in turn: the first answer not None."""
        for table in self.tables_for(identity):
            found = get(table)
            if found is not None:
                return found
        return None


class ReadsLoads(BaseSettings):
    """Settings of a module that reads the loads module's table (gatepass, navigate):
    ``LOADS_TABLE``, checked at start-up, and the table a request reads by."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # Owned by the loads module; read-only here. On a celled stage one table per cell,
    # "cell-1=<table>,cell-2=<table>"; else one table name.
    loads_table: str

    @field_validator("loads_table")
    @classmethod
    def _loads_table_parses(cls, value: str) -> str:
        """A malformed LOADS_TABLE stops the function at start-up, naming the setting."""
        CellTables.parse(LOADS_MODULE, value, setting="LOADS_TABLE")
        return value

    @property
    def loads_tables(self) -> CellTables:
        """The loads table per cell (or the one table), and which a request reads."""
        return CellTables.parse(LOADS_MODULE, self.loads_table, setting="LOADS_TABLE")
