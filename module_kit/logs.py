"""Structured JSON logs: one helper for every process (gateway, modules, workers).

:func:`setup_logging` builds the service's Powertools ``Logger`` (its name is the service,
``POWERTOOLS_SERVICE_NAME`` as the templates set it per function) and routes the
standard-library loggers under ``relay.*`` through the same JSON handler, so existing
call sites (``log.warning("deferred write %s ...")``) keep their message texts and gain
the fields below. The field names live here and nowhere else:

- ``request_id``, ``module``, ``route``, ``caller_hash``: the request being handled,
  added to every line logged while it is (:func:`bind_request`, a context variable);
- ``outcome`` (gateway: ``live``, the fallback kind, ``unavailable``; modules: ``ok``,
  ``client-error``, ``error``) and ``status`` where a request's answer is known.

A caller appears only as ``caller_hash``: a keyed SHA-256 (HMAC) prefix of the token's
``sub``, stable across processes with the same ``RELAY_LOG_HASH_KEY``; never the raw
``sub`` or driver id.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # Powertools is imported by setup_logging: module_kit.http stays light
    from aws_lambda_powertools import Logger

REQUEST_ID = "request_id"
MODULE = "module"
ROUTE = "route"
OUTCOME = "outcome"
STATUS = "status"
CALLER_HASH = "caller_hash"
FIELDS = (REQUEST_ID, MODULE, ROUTE, OUTCOME, STATUS, CALLER_HASH)

# ``module`` is a LogRecord attribute (the Python module's name): ``extra={"module": ...}``
# raises KeyError. The module's name travels on the record under this name and is written
# as ``module`` by the formatter.
_MODULE_ATTR = "relay_module"
_ATTRS = {MODULE: _MODULE_ATTR}
ROOT_LOGGER = "relay"  # every stdlib logger of the project is under it
HASH_KEY_VARIABLE = "RELAY_LOG_HASH_KEY"
_DEFAULT_HASH_KEY = b"relay-log-caller-hash-v1"
CALLER_HASH_HEX_CHARS = 16


@lru_cache(maxsize=8192)
def caller_hash(sub: str) -> str:
    """A stable, keyed stand-in for a caller's ``sub`` in logs (64 bits of HMAC-SHA256)."""
    key = os.environ.get(HASH_KEY_VARIABLE, "").encode() or _DEFAULT_HASH_KEY
    return hmac.new(key, sub.encode(), hashlib.sha256).hexdigest()[:CALLER_HASH_HEX_CHARS]


@dataclass(slots=True)
class RequestContext:
    """The request a process is handling; steps fill in what they learn (``caller`` is the
    raw ``sub``, only ever written as its hash; ``outcome`` and ``status`` once known;
    ``unit``: in the gateway, the upstream that answered: a cell, a canary, a peer region's)."""

    request_id: str
    module: str
    route: str = ""
    caller: str | None = None
    outcome: str | None = None
    status: int | None = None
    unit: str = ""


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "relay_request", default=None
)


def bind_request(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Lines logged in this context (and tasks started from it) carry ``ctx``'s fields."""
    return _current.set(ctx)


def unbind_request(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)


def current_request() -> RequestContext | None:
    return _current.get()


def fields(
    *,
    request_id: str | None = None,
    module: str | None = None,
    route: str | None = None,
    outcome: str | None = None,
    status: int | None = None,
    caller: str | None = None,
) -> dict[str, Any]:
    """``extra=`` for a log call: the given fields under their names (``caller`` hashed)."""
    out: dict[str, Any] = {}
    if request_id:
        out[REQUEST_ID] = request_id
    if module:
        out[_MODULE_ATTR] = module
    if route:
        out[ROUTE] = route
    if outcome:
        out[OUTCOME] = outcome
    if status is not None:
        out[STATUS] = status
    if caller:
        out[CALLER_HASH] = caller_hash(caller)
    return out


class RequestFields(logging.Filter):
    """Adds the bound request's fields to a record that does not carry them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        if ctx is not None:
            values = record.__dict__
            if REQUEST_ID not in values and ctx.request_id:
                values[REQUEST_ID] = ctx.request_id
            if _MODULE_ATTR not in values and ctx.module:
                values[_MODULE_ATTR] = ctx.module
            if ROUTE not in values and ctx.route:
                values[ROUTE] = ctx.route
            if CALLER_HASH not in values and ctx.caller:
                values[CALLER_HASH] = caller_hash(ctx.caller)
            if OUTCOME not in values and ctx.outcome:
                values[OUTCOME] = ctx.outcome
            if STATUS not in values and ctx.status is not None:
                values[STATUS] = ctx.status
        return True


@lru_cache(maxsize=1)
def formatter_class() -> Any:
    """Powertools' JSON formatter, writing the module's name as ``module``."""
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    class RelayFormatter(LambdaPowertoolsFormatter):
        def serialize(self, log: Any) -> str:
            if _MODULE_ATTR in log:
                log[MODULE] = log.pop(_MODULE_ATTR)
            return str(super().serialize(log))

    return RelayFormatter


class _StdoutHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stdout`` is when a line is emitted
    (a plain ``StreamHandler`` keeps the stream it was created with)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def setup_logging(
    service: str | None = None,
    *,
    stream: IO[str] | None = None,
    level: str | int | None = None,
) -> Logger:
    """The service's Powertools Logger, JSON to ``stream`` (standard output when None),
    with the ``relay.*`` standard-library loggers sent through the same handler.

    ``service``: ``POWERTOOLS_SERVICE_NAME`` wins, then this, then ``relay``. The level:
    ``LOG_LEVEL`` (or ``POWERTOOLS_LOG_LEVEL``) wins, then ``level``, then INFO. Calling
    it again replaces the previous configuration (tests pass their own ``stream``)."""
    from aws_lambda_powertools import Logger

    name = os.environ.get("POWERTOOLS_SERVICE_NAME") or service or "relay"
    level = (
        os.environ.get("LOG_LEVEL")
        or os.environ.get("POWERTOOLS_LOG_LEVEL")
        or level
        or logging.INFO
    )
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _StdoutHandler()
    )
    handler.addFilter(RequestFields())
    # Powertools configures a logger name once per process; start it afresh.
    std = logging.getLogger(name)
    for old in list(std.handlers):
        std.removeHandler(old)
    for attr in ("init", "powertools_handler"):
        std.__dict__.pop(attr, None)
    logger = Logger(
        service=name,
        level=level,
        logger_handler=handler,
        logger_formatter=formatter_class()(use_rfc3339=True, utc=True, name="%(name)s"),
    )
    logger.append_keys(service=name)
    root = logging.getLogger(ROOT_LOGGER)
    for old in [h for h in root.handlers if getattr(h, "relay_json", False)]:
        root.removeHandler(old)
    handler.relay_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    return logger
