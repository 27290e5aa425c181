"""Emergency levers (docs/operations.md, Levers): typed, audited, self-expiring, and the
same on every gateway instance.

- ``store.py``: the levers in the routing-control table, each change with its audit item;
- ``rules.py``: what each type may target, and the safety rules;
- ``control.py``: pulling and releasing (the operator API's side);
- ``active.py``: each instance's copy, what the request path asks
  (``forced_fallback(unit)``, ``shed_tiers()``);
- ``exceptions.py``: the refusals.
"""

from gateway.levers.active import ActiveLevers, ForcedFallback
from gateway.levers.control import LeverControl
from gateway.levers.exceptions import (
    InvalidLeverError,
    LeverConflictError,
    LeverError,
    LeverRefusedError,
    UnknownLeverError,
)
from gateway.levers.store import LeverStore

__all__ = [
    "ActiveLevers",
    "ForcedFallback",
    "InvalidLeverError",
    "LeverConflictError",
    "LeverControl",
    "LeverError",
    "LeverRefusedError",
    "LeverStore",
    "UnknownLeverError",
]
