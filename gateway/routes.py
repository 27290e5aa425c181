"""The declarative route table: which module serves a path, and how it is called."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared_contracts.identity import Role

from .breaker import BreakerConfig
from .bulkhead import BulkheadConfig
from .retry import RetryConfig

_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")


class RouteTableError(ValueError):
    """The route table is invalid; raised at start-up, never per request."""


class Tier(StrEnum):
    CRITICAL = "critical"
    DEGRADABLE = "degradable"
    DEFERRABLE = "deferrable"
    OPTIONAL = "optional"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModuleConfig(_Strict):
    name: str
    tier: Tier
    upstreams: list[str] = Field(min_length=1)
    timeout_seconds: float = Field(
        default=2.0, gt=0, le=30, description="Deadline for the whole call, retries included"
    )
    connect_timeout_seconds: float = Field(default=0.5, gt=0, le=10)
    breaker: BreakerConfig = BreakerConfig()
    retry: RetryConfig = RetryConfig()
    bulkhead: BulkheadConfig = BulkheadConfig()

    @field_validator("upstreams")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"upstream {url!r} is not an http(s) URL")
        return [u.rstrip("/") for u in urls]


class Route(_Strict):
    prefix: str = Field(pattern=r"^/[a-z0-9/_-]*[a-z0-9]$")
    module: str
    roles: frozenset[Role] = frozenset()
    auth: Literal["required", "none"] = "required"
    # Fallback per HTTP method, by name (see gateway.app.FALLBACKS), e.g. {GET = "loads-cache"}.
    fallback: dict[str, str] = {}

    def fallback_for(self, method: str) -> str | None:
        return self.fallback.get(method.upper())

    @model_validator(mode="after")
    def _roles_when_authenticated(self) -> Route:
        if self.auth == "required" and not self.roles:
            raise ValueError(f'route {self.prefix} needs roles (or auth = "none")')
        return self

    def matches(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


class RouteTable:
    def __init__(self, modules: dict[str, ModuleConfig], routes: list[Route]) -> None:
        for route in routes:
            if route.module not in modules:
                raise RouteTableError(f"route {route.prefix} names unknown module {route.module}")
            if route.auth == "none" and route.fallback.get("POST"):
                raise RouteTableError(f"route {route.prefix}: anonymous writes cannot be deferred")
        self.modules = modules
        # Longest prefix first, so /gatepass/verify wins over /gatepass.
        self.routes = sorted(routes, key=lambda r: len(r.prefix), reverse=True)

    def match(self, path: str) -> Route | None:
        for route in self.routes:
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

        try:
            modules = {
                name: ModuleConfig(
                    name=name,
                    **{**spec, "upstreams": [expand(u) for u in spec.get("upstreams", [])]},
                )
                for name, spec in data.get("modules", {}).items()
            }
            routes = [Route(**r) for r in data.get("routes", [])]
        except ValueError as exc:
            raise RouteTableError(str(exc)) from exc
        return cls(modules, routes)

    @classmethod
    def load(cls, path: Path, env: dict[str, str] | None = None) -> RouteTable:
        with open(path, "rb") as fh:
            return cls.from_dict(tomllib.load(fh), env)
