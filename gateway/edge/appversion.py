"""App versions at the edge: the oldest app each operation serves, deprecated operations,
and requests counted by app version.

Apps in the field cannot be made to update, so the gateway says what it expects of them:

- **Which app.** The app sends its version in ``Relay-App-Version`` (``5.2.0``), or in its
  ``User-Agent`` (``RelayApp/5.2.0 (Android 14)``); the header wins when both are sent.
  A version is ``MAJOR.MINOR`` or ``MAJOR.MINOR.PATCH``, optionally followed by a
  pre-release or build suffix (``5.3.0-beta.2``, ``5.2.1+817``) that comparisons ignore.
  A malformed one (in the header, or after ``RelayApp/``) is a 400 ``invalid-app-version``.
- **The minimum.** ``[app] min_version`` in the route table, raised per route by
  ``min_app_version``: an older app gets 426 ``upgrade-required`` (what the minimum is,
  and to update the app from its store; the minimum also in ``Relay-App-Min-Version``)
  before anything is forwarded. No ``Upgrade`` header: what needs upgrading is the app,
  not the protocol, and a protocol token there would invite an HTTP stack to switch.
- **No version.** Dispatch consoles, gate scanners, scripts and operators' tools are not
  the app and send none; a driver's critical call refused for a missing header would be
  worse than an old client served. So by default (``without_version = "serve"``) such a
  request is served and counted as ``none``; ``"refuse"`` answers it 426 as well.
- **Deprecated operations**, per route and method (``deprecated = { GET = { since = ...,
  sunset = ..., link = ... } }``): every answer to the operation, live, degraded or a
  problem the gateway gives itself, carries ``Deprecation: @<unix seconds>`` (RFC 9745),
  ``Sunset: <IMF-fixdate>`` (RFC 8594) and ``Link: <...>; rel="deprecation"``. The gateway
  keeps serving an operation past its sunset (the module decides when it goes); start-up
  logs a warning for each (:meth:`AppVersions.past_sunset`). Load shedding's 503s, given
  before anything else runs, carry none of them.
- **Counted** per request in :class:`~gateway.ops.metrics.RequestMetrics`
  (``relay_gateway_requests_by_app_version_total{app_version}``): ``major.minor`` of a
  served app, ``none``, ``invalid``, ``older-than-min`` (answered 426), and ``other`` once
  :data:`MAX_VERSION_LABELS` versions have been seen, so a client cannot grow the series.

The hot path: :class:`CheckAppVersion` reads the request's headers into a dict once (which
``Authenticate`` reuses), a parsed version is cached by the header's bytes, and the
route's policy is one dict lookup.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared_contracts.errors import InvalidAppVersionError, UpgradeRequiredError

if TYPE_CHECKING:
    from gateway.ops.metrics import RequestMetrics
    from gateway.routing.routes import RouteTable

log = logging.getLogger("relay.gateway")

HEADER = "Relay-App-Version"
MIN_VERSION_HEADER = "Relay-App-Min-Version"
APP_PRODUCT = "RelayApp"  # the app's product token in its User-Agent
_HEADER = HEADER.lower().encode()
_USER_AGENT = b"user-agent"
_PRODUCT = (APP_PRODUCT + "/").encode()
# MAJOR.MINOR[.PATCH], then an optional pre-release or build suffix (ignored)
VERSION_PATTERN = r"^(\d{1,4})\.(\d{1,4})(?:\.(\d{1,6}))?(?:[-+][0-9A-Za-z.+-]{1,64})?$"
_VERSION = re.compile(VERSION_PATTERN)

# The labels of relay_gateway_requests_by_app_version_total besides "major.minor".
LABEL_NONE = "none"  # no version sent: not the app (or an app too old to send one)
LABEL_INVALID = "invalid"  # a malformed version: 400
LABEL_OLDER = "older-than-min"  # below the operation's minimum: 426
LABEL_OTHER = "other"  # a version beyond the first MAX_VERSION_LABELS seen
# Distinct "major.minor" labels a process counts before the rest go to "other".
MAX_VERSION_LABELS = 32
# Distinct header values (or User-Agents) whose parse is kept; the cache is emptied when
# full, so a client sending a new value per request costs a parse, never memory.
MAX_CACHED_VALUES = 1024
STORE_ADVICE = "update the Relay app from the App Store or Google Play"


class AppVersion(NamedTuple):
    major: int
    minor: int
    patch: int = 0

    @property
    def label(self) -> str:
        """``major.minor``: what the counts and the consumer contracts name."""
        return f"{self.major}.{self.minor}"

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> AppVersion:
    """``5.2.0`` (or ``5.2``, ``5.3.0-beta.2``) as an :class:`AppVersion`; ValueError if not."""
    m = _VERSION.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an app version (MAJOR.MINOR[.PATCH], e.g. 5.2.0)")
    return AppVersion(int(m[1]), int(m[2]), int(m[3] or 0))


def version_in_user_agent(agent: str) -> str | None:
    """The version after ``RelayApp/`` in a User-Agent, or None when it is not the app's."""
    for product in agent.split():
        name, sep, version = product.partition("/")
        if sep and name == APP_PRODUCT:
            return version
    return None


# --- configuration (the route table's [app] block and its routes' fields) ------------


class AppConfig(BaseModel):
    """The route table's ``[app]`` block."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The oldest app every operation serves (None: any).
    min_version: str | None = None
    # A request without a version: "serve" it (counted as none) or "refuse" it (426).
    without_version: Literal["serve", "refuse"] = "serve"

    @field_validator("min_version")
    @classmethod
    def _min_version(cls, value: str | None) -> str | None:
        return check_version_field(value)

    @property
    def minimum(self) -> AppVersion | None:
        return None if self.min_version is None else parse_version(self.min_version)


class Deprecation(BaseModel):
    """A deprecated operation: since when, when it goes (``sunset``, optional), and where
    callers read what to use instead (``link``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: date
    sunset: date | None = None
    link: str = Field(pattern=r"^https://\S+$", max_length=500)

    @field_serializer("since", "sunset")
    def _iso(self, day: date | None) -> str | None:
        """As the route table writes them, so a dumped table loads again (also as JSON)."""
        return None if day is None else day.isoformat()

    @model_validator(mode="after")
    def _sunset_after_since(self) -> Deprecation:
        if self.sunset is not None and self.sunset <= self.since:
            raise ValueError(f"sunset ({self.sunset}) must come after since ({self.since})")
        return self

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``Deprecation``, ``Sunset`` (when set) and ``Link``, as raw ASGI headers."""
        out = [(b"deprecation", f"@{_epoch(self.since)}".encode())]
        if self.sunset is not None:
            out.append((b"sunset", format_datetime(_midnight(self.sunset), usegmt=True).encode()))
        out.append((b"link", f'<{self.link}>; rel="deprecation"; type="text/html"'.encode()))
        return out


def check_version_field(value: str | None) -> str | None:
    """A configured version (``min_version``, a route's ``min_app_version``), validated."""
    if value is not None:
        parse_version(value)
    return value


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _epoch(day: date) -> int:
    return int(_midnight(day).timestamp())


# --- the policy and the step ---------------------------------------------------------


class RoutePolicy(NamedTuple):
    minimum: AppVersion | None
    shown: str  # the minimum as configured, for the 426's detail
    deprecated: Mapping[str, list[tuple[bytes, bytes]]]  # method -> answer headers


class AppVersions:
    """Each route's policy, the parse cache and what is counted (one per app)."""

    def __init__(self, table: RouteTable, metrics: RequestMetrics | None = None) -> None:
        app = table.app
        self.serve_without = app.without_version == "serve"
        self.policies: dict[str, RoutePolicy] = {}
        self.deprecations: dict[tuple[str, str], Deprecation] = {}
        for route in table.routes:
            minimum, shown = app.minimum, app.min_version or ""
            if route.min_app_version is not None:
                minimum, shown = parse_version(route.min_app_version), route.min_app_version
            self.policies[route.prefix] = RoutePolicy(
                minimum,
                shown,
                {method: dep.headers() for method, dep in route.deprecated.items()},
            )
            for method, dep in route.deprecated.items():
                self.deprecations[(route.prefix, method)] = dep
        self.metrics = metrics
        self._parsed: dict[bytes, AppVersion | str] = {}  # by Relay-App-Version
        self._agents: dict[bytes, AppVersion | str] = {}  # by User-Agent
        self._labels: dict[AppVersion, str] = {}
        self._seen: set[str] = set()  # the major.minor labels counted so far

    def past_sunset(self, now: float) -> Iterator[str]:
        """``GET /loads`` for each deprecated operation whose sunset is before ``now``."""
        today = datetime.fromtimestamp(now, UTC).date()
        for (prefix, method), dep in sorted(self.deprecations.items()):
            if dep.sunset is not None and dep.sunset <= today:
                yield f"{method} {prefix}"

    def version_of(self, value: bytes, *, agent: bool = False) -> AppVersion | str:
        """The version a ``Relay-App-Version`` (or, ``agent``, a User-Agent) says: an
        :class:`AppVersion`, ``invalid`` (malformed) or ``none`` (a User-Agent that is not
        the app's); parsed once per value."""
        cache = self._agents if agent else self._parsed
        found = cache.get(value)
        if found is not None:
            return found
        text = value.decode("latin-1")
        version = version_in_user_agent(text) if agent else text
        if version is None:
            found = LABEL_NONE
        else:
            try:
                found = parse_version(version)
            except ValueError:
                found = LABEL_INVALID
        if len(cache) >= MAX_CACHED_VALUES:
            cache.clear()
        cache[value] = found
        return found

    def label(self, version: AppVersion) -> str:
        """``major.minor``, or ``other`` past :data:`MAX_VERSION_LABELS` distinct ones."""
        label = self._labels.get(version)
        if label is None:
            label = version.label
            if label not in self._seen and len(self._seen) >= MAX_VERSION_LABELS:
                label = LABEL_OTHER
            else:
                self._seen.add(label)
            if len(self._labels) >= MAX_CACHED_VALUES:
                self._labels.clear()
            self._labels[version] = label
        return label

    def count(self, label: str) -> None:
        metrics = self.metrics
        if metrics is not None:
            counts = metrics.app_versions
            counts[label] = counts.get(label, 0) + 1
            metrics.last_app_version = label


class CheckAppVersion:
    """After ``ShedLoad``: the caller's app version against the route's minimum (426, or
    400 if malformed), counted; a deprecated operation's answers get its headers. Reads
    the request's headers into ``scope["state"]["headers"]`` (``Authenticate`` uses it)."""

    def __init__(self, app: ASGIApp, versions: AppVersions) -> None:
        self.app = app
        self.versions = versions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["state"]
        hdrs = state["headers"] = dict(scope["headers"])
        versions = self.versions
        policy = versions.policies[state["route"].prefix]
        extra = policy.deprecated.get(scope["method"]) if policy.deprecated else None
        if extra is not None:
            state["answer_headers"] = extra  # ProblemAnswers adds them to a problem answer
        raw = hdrs.get(_HEADER)
        if raw is not None:
            found = versions.version_of(raw)
        else:
            agent = hdrs.get(_USER_AGENT)
            found = (
                versions.version_of(agent, agent=True)
                if agent is not None and _PRODUCT in agent
                else LABEL_NONE
            )
        if isinstance(found, str):
            if found == LABEL_INVALID:
                versions.count(LABEL_INVALID)
                raise InvalidAppVersionError(
                    f"{HEADER} (or the {APP_PRODUCT}/ version in User-Agent) must be "
                    "MAJOR.MINOR.PATCH, e.g. 5.2.0"
                )
            if not versions.serve_without and policy.minimum is not None:
                versions.count(LABEL_OLDER)
                raise UpgradeRequiredError(
                    f"this operation needs the Relay app {policy.shown} or newer, and the "
                    f"request does not say which app sent it ({HEADER}): {STORE_ADVICE}",
                    headers={MIN_VERSION_HEADER: policy.shown},
                )
            versions.count(LABEL_NONE)
        elif policy.minimum is not None and found < policy.minimum:
            versions.count(LABEL_OLDER)
            raise UpgradeRequiredError(
                f"this operation needs the Relay app {policy.shown} or newer (this app is "
                f"{found}): {STORE_ADVICE}",
                headers={MIN_VERSION_HEADER: policy.shown},
            )
        else:
            versions.count(versions.label(found))
        if extra is None:
            await self.app(scope, receive, send)
            return

        async def send_deprecated(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_deprecated)


def warn_past_sunset(versions: AppVersions, wall_clock: Callable[[], float] = time.time) -> None:
    """A warning at start-up for each deprecated operation still routed past its sunset."""
    for operation in versions.past_sunset(wall_clock()):
        log.warning(
            "%s is past its sunset and still routed: remove it from the route table "
            "once no app calls it",
            operation,
        )
