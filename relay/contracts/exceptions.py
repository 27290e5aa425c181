"""The check's errors."""

from __future__ import annotations


class ContractsError(RuntimeError):
    """The check could not run (Optic missing or failing, a file unreadable), or a release
    was refused."""
