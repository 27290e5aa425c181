"""The identity context the gateway passes to modules: who the caller is.

The gateway forwards it in the ``x-relay-identity`` header as a short-lived JWT it signs
for the one module it calls; signing and verification are runtime, in
:mod:`module_kit.signed_context`. This is only the model, and the error a missing or bad
context raises.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from ._base import DriverId, Published


class Role(StrEnum):
    DRIVER = "driver"
    GATE = "gate"  # gate scanner at a facility
    DISPATCH = "dispatch"  # assigns loads, messages drivers
    OPS = "ops"  # operators: levers, faults, ops views


class InvalidIdentityError(ValueError):
    """The identity context is missing, forged, expired or addressed to another module."""


class IdentityContext(Published):
    sub: str
    role: Role
    driver_id: DriverId | None = None
    # A driver's cell in each celled module (module -> cell, e.g. {"loads": "cell-2"}), as
    # the gateway's placement says: a module reading another module's data for this driver
    # reads it from that cell (docs/cells.md). Empty for other callers and uncelled stages.
    cells: dict[str, str] = Field(default_factory=dict)

    @property
    def driver(self) -> str:
        """The driver id of a driver's identity (routes behind ``DriverIdentity`` have one)."""
        if self.driver_id is None:
            raise InvalidIdentityError(f"{self.role.value} identity {self.sub} is no driver")
        return self.driver_id
