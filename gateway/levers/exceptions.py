"""What a lever change can run into. Each is a refusal: nothing was written."""

from __future__ import annotations


class LeverError(Exception):
    """Base of the lever errors."""


class InvalidLeverError(LeverError):
    """The type or target names nothing this stage has (422)."""


class LeverRefusedError(LeverError):
    """A safety rule refuses the change (409 ``lever-refused``); ``rule`` names it."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{detail} (safety rule {rule})")
        self.rule = rule
        self.detail = detail


class UnknownLeverError(LeverError):
    """No such lever is pulled (404)."""


class LeverConflictError(LeverError):
    """Another change to the same lever came first; read again and retry (409)."""
