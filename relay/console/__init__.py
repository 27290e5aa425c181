"""The operators' console: a dashboard page over the gateway's ops API (``relay dev``
serves it; :mod:`relay.console.server`)."""

from .server import ConsoleSettings, create_app

__all__ = ["ConsoleSettings", "create_app"]
