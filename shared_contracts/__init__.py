"""Contracts shared by the gateway, the modules, clients and tests.

Nothing here talks to AWS or the network; importing it is cheap.
"""

from ._base import (
    ID_PATTERN,
    Contract,
    DriverId,
    FacilityId,
    Latitude,
    LoadId,
    Longitude,
    MessageId,
    PassId,
    Published,
    Timestamp,
)
from .errors import Problem, ProblemError
from .identity import IdentityContext, Role

__all__ = [
    "ID_PATTERN",
    "Contract",
    "DriverId",
    "FacilityId",
    "IdentityContext",
    "Latitude",
    "LoadId",
    "Longitude",
    "MessageId",
    "PassId",
    "Problem",
    "ProblemError",
    "Published",
    "Role",
    "Timestamp",
]
