"""boto3 clients with deadlines: every module that serves requests makes its clients here.

A delivery holds an idempotency lease (:mod:`module_kit.idempotency`): under Lambda the
invocation's remaining time, elsewhere ``LOCAL_IN_PROGRESS_TIMEOUT`` (the functions'
Timeout, 10 s). It should normally end well within it, so clients made here connect
within :data:`CONNECT_TIMEOUT_SECONDS`, answer within :data:`READ_TIMEOUT_SECONDS`, and
make :data:`MAX_ATTEMPTS` attempts in all (botocore's standard retry mode: its first
backoff is under 1 s). boto3's defaults (60 s reads, up to 5 attempts) let one stalled
call hold a delivery for minutes. A stalled call now gives up within
:func:`call_worst_case` (4 s); a delivery whose storage stalls makes at most two such calls
before it ends (the stalled write, then Powertools deleting its record), 8 s, inside the
10 s lease. DynamoDB answers in milliseconds; the gateway waits 2 s for a whole module
call, so a slower answer is of no use to anyone. (The notifications worker holds no lease
and keeps boto3's defaults.)

boto3 is imported on first use and nothing here talks to AWS at import time: a client is
made when a repository first needs it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import Config

CONNECT_TIMEOUT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 1.0
MAX_ATTEMPTS = 2  # the first attempt and one retry
# botocore's standard mode waits random() * scale * 2**(attempt - 1) s before a retry, the
# scale 1 s for throttling and 25-50 ms otherwise: the first wait is under 1 s.
_STANDARD_MODE_MAX_FIRST_BACKOFF_SECONDS = 1.0


def client_config(**overrides: Any) -> Config:
    """The botocore ``Config`` every module's boto3 clients and resources are made with."""
    from botocore.config import Config

    settings: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": READ_TIMEOUT_SECONDS,
        "retries": {"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    }
    settings.update(overrides)
    return Config(**settings)


def client(service: str, **overrides: Any) -> Any:
    """A boto3 client for ``service`` made with :func:`client_config`."""
    import boto3

    return boto3.client(service, config=client_config(**overrides))


def resource(service: str, **overrides: Any) -> Any:
    """A boto3 resource (e.g. ``dynamodb``) made with :func:`client_config`."""
    import boto3

    return boto3.resource(service, config=client_config(**overrides))


def call_worst_case() -> timedelta:
    """The longest one AWS call made with :func:`client_config` takes to give up.

    Every attempt may spend its whole connect and read timeouts; between attempts botocore's
    standard mode waits less than 1 s the first time. 2 x (0.5 s + 1 s) + 1 s = 4 s.
    """
    attempts = MAX_ATTEMPTS * (CONNECT_TIMEOUT_SECONDS + READ_TIMEOUT_SECONDS)
    backoff = _STANDARD_MODE_MAX_FIRST_BACKOFF_SECONDS * (MAX_ATTEMPTS - 1)
    return timedelta(seconds=attempts + backoff)
