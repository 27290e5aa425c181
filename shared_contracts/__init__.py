"""Contracts shared by the gateway, the modules, clients and tests.

Nothing here talks to AWS or the network; importing it is cheap.
"""

from .errors import Problem, ProblemError
from .identity import IdentityContext, Role

__all__ = ["IdentityContext", "Problem", "ProblemError", "Role"]
