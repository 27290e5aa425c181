"""The declarative route table: which module serves a path, and how it is called."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.edge.appversion import AppConfig, Deprecation, check_version_field, parse_version
from gateway.resilience.breaker import BreakerConfig
from gateway.resilience.bulkhead import BulkheadConfig
from gateway.resilience.retry import BudgetConfig, RetryConfig
from shared_contracts.identity import Role

_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")
CELL_NAME = r"^[a-z][a-z0-9-]{0,15}$"

DEFAULT_TIMEOUT_SECONDS = 2.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 0.5
READ_METHODS = frozenset({"GET"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFERRED = "deferred"  # the fallback that queues a write (gateway.deferred.queue)


class RouteTableError(ValueError):
    """The route table is invalid; raised at start-up, never per request."""


def _explain(exc: ValidationError) -> str:
    """One line per problem, named by its setting: ``retry_budget.ratio: Input should be...``."""
    return "; ".join(
        ".".join(str(p) for p in e["loc"])
        + ": " * bool(e["loc"])
        + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )


class Tier(StrEnum):
    """What drivers keep when the module fails, checked at start-up on every route a
    driver may call (``roles`` includes ``driver``); see :meth:`RouteTable.tier_problems`."""

    CRITICAL = "critical"  # reads answer from a fallback, and so do writes
    DEGRADABLE = "degradable"  # reads answer from a fallback (e.g. static directions)
    DEFERRABLE = "deferrable"  # writes are deferred (202, applied later)
    OPTIONAL = "optional"  # nothing: the driver may get 503


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModuleConfig(_Strict):
    name: str
    tier: Tier
    upstream: str = Field(description="The module's base URL (a celled module's first cell's)")
    # A celled module (docs/cells.md): each cell's base URL, in cell order. Written in the
    # table (or its environment variable) as "cell-1=https://...,cell-2=https://...".
    cells: dict[str, str] = {}
    timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUT_SECONDS,
        gt=0,
        le=30,
        description="Deadline for the whole call, retries included",
    )
    connect_timeout_seconds: float = Field(default=DEFAULT_CONNECT_TIMEOUT_SECONDS, gt=0, le=10)
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    retry_budget: BudgetConfig = BudgetConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()

    @field_validator("upstream")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"upstream {url!r} is not an http(s) URL")
        return url.rstrip("/")

    @field_validator("cells")
    @classmethod
    def _cells(cls, cells: dict[str, str]) -> dict[str, str]:
        for cell, url in cells.items():
            if not re.match(CELL_NAME, cell):
                raise ValueError(f"cell name {cell!r} is not {CELL_NAME}")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"cell {cell}: {url!r} is not an http(s) URL")
        return {cell: url.rstrip("/") for cell, url in cells.items()}

    @property
    def celled(self) -> bool:
        return bool(self.cells)

    def unit(self, cell: str) -> str:
        """The name of one cell of the module: its upstream, breaker, metrics and release."""
        return f"{self.name}/{cell}"

    @model_validator(mode="after")
    def _connect_within_deadline(self) -> ModuleConfig:
        if self.connect_timeout_seconds > self.timeout_seconds:
            raise ValueError(
                f"connect_timeout_seconds ({self.connect_timeout_seconds}) "
                f"exceeds timeout_seconds ({self.timeout_seconds})"
            )
        slow = self.breaker.slow_call_seconds
        if slow is not None and slow >= self.timeout_seconds:
            raise ValueError(
                f"breaker.slow_call_seconds ({slow}) must be below "
                f"timeout_seconds ({self.timeout_seconds}), or no call could ever be slow"
            )
        return self


class Route(_Strict):
    prefix: str = Field(pattern=r"^/[a-z0-9/_-]*[a-z0-9]$")
    module: str
    roles: frozenset[Role] = frozenset()
    auth: Literal["required", "none"] = "required"
    # Fallback per HTTP method, by name (see gateway.app.build_fallbacks), e.g.
    # {GET = "loads-last-known-good"}; names are checked against it by create_app.
    fallback: dict[str, str] = {}
    # A strong ETag on GET 200 answers, live or degraded, and If-None-Match answered with
    # 304 (gateway.forwarding.conditional); per caller, so only on authenticated routes.
    etag: StrictBool = False
    # Where a celled module's partition key comes from (docs/cells.md): "driver" (the
    # caller's driver id) or "body:<field>" (a top-level field of the JSON body, e.g. the
    # driver a dispatcher assigns a load to). Needed on every route of a celled module.
    cell_key: str | None = Field(default=None, pattern=r"^(driver|body:[a-z_]{1,40})$")
    # The tier load shedding gives the route's requests (gateway.edge.shedding), when it is
    # not its module's: e.g. "optional" for traffic no driver waits on, shed first.
    shed_tier: Tier | None = None
    # The oldest app version this route serves, when newer than the table's [app]
    # min_version (gateway.edge.appversion: older apps get 426).
    min_app_version: str | None = None
    # Deprecated operations, per upper-case method: {since, sunset, link}; their answers
    # carry Deprecation, Sunset and Link (gateway.edge.appversion).
    deprecated: dict[str, Deprecation] = {}

    @field_validator("min_app_version")
    @classmethod
    def _app_version(cls, value: str | None) -> str | None:
        return check_version_field(value)

    def fallback_for(self, method: str) -> str | None:
        return self.fallback.get(method.upper())

    @model_validator(mode="after")
    def _roles_when_authenticated(self) -> Route:
        if self.auth == "required" and not self.roles:
            raise ValueError('needs roles (or auth = "none")')
        if self.auth == "none" and self.roles:
            raise ValueError('roles mean nothing with auth = "none"')
        if self.auth == "none" and self.etag:
            raise ValueError(
                "etag answers are per caller (Cache-Control: private, Vary: Authorization), "
                'not for auth = "none"'
            )
        return self

    @model_validator(mode="after")
    def _fallback_methods(self) -> Route:
        for method, name in self.fallback.items():
            if method not in READ_METHODS | WRITE_METHODS:
                raise ValueError(
                    f"fallback method {method!r} is not one of "
                    f"{sorted(READ_METHODS | WRITE_METHODS)} (upper case)"
                )
            if name == DEFERRED and method not in WRITE_METHODS:
                raise ValueError(f"only writes can be deferred, not {method}")
        for method in self.deprecated:
            if method not in READ_METHODS | WRITE_METHODS:
                raise ValueError(
                    f"deprecated method {method!r} is not one of "
                    f"{sorted(READ_METHODS | WRITE_METHODS)} (upper case)"
                )
        return self

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class RouteTable:
    def __init__(
        self, modules: dict[str, ModuleConfig], routes: list[Route], app: AppConfig | None = None
    ) -> None:
        # the [app] block: the oldest app served, and what a request without a version gets
        self.app = app = app or AppConfig()
        for route in routes:
            if (
                route.min_app_version is not None
                and app.minimum is not None
                and parse_version(route.min_app_version) <= app.minimum
            ):
                raise RouteTableError(
                    f"route {route.prefix}: min_app_version {route.min_app_version} is not "
                    f"above [app] min_version {app.min_version}, so it changes nothing"
                )
            if route.module not in modules:
                raise RouteTableError(f"route {route.prefix} names unknown module {route.module}")
            if route.auth == "none" and WRITE_METHODS & route.fallback.keys():
                raise RouteTableError(
                    f"route {route.prefix}: anonymous writes cannot have a fallback "
                    "(a deferred or cached write needs a caller)"
                )
            if modules[route.module].celled and route.cell_key is None:
                raise RouteTableError(
                    f"route {route.prefix}: module {route.module} is celled, so the route "
                    'names its partition key (cell_key = "driver" or "body:<field>")'
                )
        used = {route.module for route in routes}
        for name in modules:
            if name not in used:
                raise RouteTableError(f"module {name} has no routes: remove it or route to it")
        self.modules = modules
        if problems := self.tier_problems(modules, routes):
            raise RouteTableError("; ".join(problems))
        # Longest prefix first, so /gatepass/verify wins over /gatepass.
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)
        # The same, by first path segment: a path is only compared with the routes that
        # share its first segment (on every request; the whole table costs ~3x more).
        self._by_segment: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_segment.setdefault(route.prefix.split("/", 2)[1], []).append(route)

    @staticmethod
    def tier_problems(modules: Mapping[str, ModuleConfig], routes: list[Route]) -> list[str]:
        """Every route a driver may call keeps what its module's tier promises."""
        problems = []
        for route in routes:
            if Role.DRIVER not in route.roles:
                continue
            tier = modules[route.module].tier
            reads = any(m in READ_METHODS for m in route.fallback)
            writes = any(m in WRITE_METHODS for m in route.fallback)
            deferred = any(
                route.fallback.get(m) == DEFERRED for m in WRITE_METHODS & route.fallback.keys()
            )
            if tier in (Tier.CRITICAL, Tier.DEGRADABLE) and not reads:
                problems.append(
                    f"route {route.prefix}: module {route.module} is {tier}, "
                    "so its reads need a fallback (fallback = {GET = ...})"
                )
            if tier is Tier.CRITICAL and not writes:
                problems.append(
                    f"route {route.prefix}: module {route.module} is critical, "
                    "so its writes need a fallback (e.g. fallback = {POST = ...})"
                )
            if tier is Tier.DEFERRABLE and not deferred:
                problems.append(
                    f"route {route.prefix}: module {route.module} is deferrable, "
                    'so its writes must be deferred (fallback = {POST = "deferred"})'
                )
        return problems

    def match(self, path: str) -> Route | None:
        for route in self._by_segment.get(path.split("/", 2)[1] if path[:1] == "/" else "", ()):
            if route.matches(path):
                return route
        return None

    @classmethod
    def from_dict(cls, data: dict, env: Mapping[str, str] | None = None) -> RouteTable:
        values: Mapping[str, str] = os.environ if env is None else env

        def expand(value: str) -> str:
            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in values:
                    raise RouteTableError(f"route table needs environment variable {m.group(1)}")
                return values[m.group(1)]

            return _VAR.sub(sub, value)

        modules = {}
        for name, spec in data.get("modules", {}).items():
            if "upstreams" in spec:
                raise RouteTableError(
                    f'module {name}: "upstreams" is gone; name one URL as upstream = "..."'
                )
            upstream = spec.get("upstream")
            try:
                modules[name] = ModuleConfig(
                    name=name,
                    **{
                        **spec,
                        **(_upstreams(expand(upstream)) if isinstance(upstream, str) else {}),
                    },
                )
            except ValidationError as exc:
                raise RouteTableError(f"module {name}: {_explain(exc)}") from exc
        routes = []
        for i, spec in enumerate(data.get("routes", [])):
            try:
                routes.append(Route(**spec))
            except ValidationError as exc:
                where = spec.get("prefix", f"#{i + 1}") if isinstance(spec, dict) else f"#{i + 1}"
                raise RouteTableError(f"route {where}: {_explain(exc)}") from exc
        try:
            app = AppConfig(**data.get("app", {}))
        except (TypeError, ValidationError) as exc:
            detail = _explain(exc) if isinstance(exc, ValidationError) else "must be a table"
            raise RouteTableError(f"app: {detail}") from exc
        return cls(modules, routes, app)

    def units(self) -> dict[str, ModuleConfig]:
        """Every upstream the gateway calls: each uncelled module by its name, and each cell
        of a celled one as ``<module>/<cell>`` with that cell's URL."""
        out: dict[str, ModuleConfig] = {}
        for module in self.modules.values():
            out.update(module_units(module))
        return out

    @classmethod
    def load(cls, path: Path, env: dict[str, str] | None = None) -> RouteTable:
        with open(path, "rb") as fh:
            return cls.from_dict(tomllib.load(fh), env)


def module_units(module: ModuleConfig) -> dict[str, ModuleConfig]:
    """A module's upstreams: itself, or each of its cells (``<module>/<cell>``)."""
    if not module.celled:
        return {module.name: module}
    return {
        module.unit(cell): module.model_copy(update={"upstream": url})
        for cell, url in module.cells.items()
    }


def elsewhere(module: ModuleConfig, upstream: str) -> ModuleConfig:
    """``module`` served from other URLs (another region's): ``upstream`` as routes.toml
    writes it, with the same cells as ``module``."""
    try:
        other = ModuleConfig(**{**module.model_dump(), "cells": {}, **_upstreams(upstream)})
    except ValidationError as exc:
        raise RouteTableError(f"module {module.name}: {_explain(exc)}") from exc
    if list(other.cells) != list(module.cells):
        raise RouteTableError(
            f"module {module.name}: {upstream!r} has cells {list(other.cells)}, "
            f"not {list(module.cells)}"
        )
    return other


def _upstreams(value: str) -> dict[str, object]:
    """``upstream`` as written: one URL, or a celled module's "cell=URL,cell=URL" list."""
    if "=" not in value:
        return {"upstream": value}
    cells: dict[str, str] = {}
    for part in value.split(","):
        cell, sep, url = part.strip().partition("=")
        if not sep or not cell or cell in cells:
            raise RouteTableError(f"upstream {value!r}: each cell once, as cell=URL")
        cells[cell] = url
    return {"upstream": next(iter(cells.values())), "cells": cells}
