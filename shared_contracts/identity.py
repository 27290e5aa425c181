"""The identity context the gateway passes to modules.

The gateway authenticates the caller and forwards who they are in the ``x-relay-identity``
header; modules never look at the caller's token. Clients cannot set this header: the
gateway drops any client-supplied ``x-relay-*`` header before forwarding.
"""

from __future__ import annotations

import base64
from enum import StrEnum

from pydantic import ValidationError

from ._base import Contract, DriverId


class Role(StrEnum):
    DRIVER = "driver"
    GATE = "gate"          # gate scanner at a facility
    DISPATCH = "dispatch"  # assigns loads, messages drivers
    OPS = "ops"            # operators: levers, faults, ops views


class IdentityContext(Contract):
    sub: str
    role: Role
    driver_id: DriverId | None = None

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json(exclude_none=True).encode()).decode()

    @classmethod
    def decode(cls, value: str) -> "IdentityContext":
        try:
            raw = base64.urlsafe_b64decode(value.encode())
            return cls.model_validate_json(raw)
        except (ValueError, ValidationError) as exc:
            raise ValueError("malformed identity context") from exc
