"""The release tooling's errors: a bad policy or a bad plan file, both refused before any
traffic moves."""

from __future__ import annotations


class ReleaseError(Exception):
    """Base of the release tooling's errors."""


class PolicyError(ReleaseError, ValueError):
    """A policy setting is out of range; the message names the setting."""


class PlanError(ReleaseError, ValueError):
    """The plan file is malformed; the message names the stage and key."""
