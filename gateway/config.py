"""Gateway settings: explicit argument, then ``RELAY_*`` environment variable, then default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from module_kit.http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADER_COUNT,
    DEFAULT_MAX_HEADER_FIELD_BYTES,
    HeaderLimits,
)

DEFAULT_ROUTES_FILE = Path(__file__).parent / "routing" / "routes.toml"
DEFAULT_MAX_CONNECTIONS = 200
DEFAULT_MAX_KEEPALIVE = 100
DEFAULT_KEEPALIVE_EXPIRY_SECONDS = 4.0
DEFAULT_CACHE_ENTRIES = 20_000
DEFAULT_QUEUE_TIMEOUT_SECONDS = 1.0
DEFAULT_STORE_TIMEOUT_SECONDS = 0.5
# Breakers shared across the fleet (gateway.resilience.fleet, docs/resilience.md): how often
# an instance reads the fleet's breaker items (at most), how old its copy may grow (the
# store unreachable) before it is no longer followed for probing, and each call's deadline.
DEFAULT_BREAKER_REFRESH_SECONDS = 0.5
DEFAULT_BREAKER_STALE_SECONDS = 3.0
DEFAULT_BREAKER_STORE_TIMEOUT_SECONDS = 0.5
# Who refreshes an instance's copy of them: "background" (a process: a loop while idle, and
# requests start refreshes without waiting for them) or "request" (Lambda: an environment
# is frozen between invocations, so a request whose copy is due a refresh waits for it, at
# most this long, before its breaker decides).
BreakerRefresh = Literal["background", "request"]
DEFAULT_BREAKER_REFRESH_WAIT_SECONDS = 0.1
# How long a client may take to send its request headers (from the connection or from the
# first byte of the request), and to send the next piece of its body; then 408 and close.
DEFAULT_HEADER_READ_TIMEOUT_SECONDS = 10.0
DEFAULT_BODY_READ_TIMEOUT_SECONDS = 10.0
LOCAL_STAGES = {"local", "test"}
# Load shedding (gateway.edge.shedding, docs/resilience.md "Load shedding"): one process's
# hard limits (requests in flight, the event loop's standing lag), where critical requests
# are shed, and the fraction of them from which each other tier is: by default optional
# from 20 in flight or 1 ms of standing lag, deferrable from 40 or 2 ms, degradable from
# 60 or 3 ms, critical at 2,000 or 100 ms. Low: a critical forward takes well under a
# millisecond of CPU, so a standing queue of a few ms already multiplies its latency (the
# lag counts only at 500 requests a second or more: gateway.edge.shedding), and every
# tier below critical has an answer of its own meanwhile (the app retries, queues or
# shows static directions).
DEFAULT_SHED_MAX_IN_FLIGHT = 2000
DEFAULT_SHED_MAX_DELAY_MS = 100.0
DEFAULT_SHED_AT_OPTIONAL = 0.01
DEFAULT_SHED_AT_DEFERRABLE = 0.02
DEFAULT_SHED_AT_DEGRADABLE = 0.03
DEFAULT_SHED_AT_CRITICAL = 1.0
DEFAULT_SHED_RETRY_AFTER_SECONDS = 1


def default_breaker_refresh() -> BreakerRefresh:
    """``"request"`` in Lambda (``AWS_LAMBDA_FUNCTION_NAME`` is set in every execution
    environment), ``"background"`` anywhere else."""
    return "request" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "background"


def default_shedding() -> bool:
    """Off in Lambda (one request per execution environment: no in-flight count or event
    loop queue to read; only an operator's forced tiers are shed there), on anywhere else."""
    return not os.environ.get("AWS_LAMBDA_FUNCTION_NAME")


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    stage: str = "local"
    routes_file: Path = DEFAULT_ROUTES_FILE
    # Caller tokens: the Cognito user pool (issuer), its JWKS and our app client ids.
    token_issuer: str | None = None
    jwks_url: str | None = None
    token_client_ids: str = Field(default="", description="Comma-separated app client ids")
    # The gateway's Ed25519 key for identity contexts: PEM here (local), or a secret's ARN.
    identity_signing_key: str | None = None
    identity_signing_key_secret_arn: str | None = None
    # Rate limits per caller and route: "<per second>/<burst>" per role.
    rate_limit_driver: str = "10/30"
    rate_limit_gate: str = "20/60"
    rate_limit_dispatch: str = "20/60"
    rate_limit_ops: str = "2/10"
    rate_limit_anonymous: str = "5/20"
    # Sign upstream calls with SigV4 (module function URLs use AuthType AWS_IAM in AWS).
    sign_upstreams: bool = False
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # One INFO "request" log line per forwarded request (RELAY_ACCESS_LOG=true); off by
    # default: the outcome fields are on the fallback and 503 lines (docs/operations.md).
    access_log: bool = False
    # Request headers (431 over any of these), and the read timeouts of gateway.edge.server (408).
    max_header_count: int = Field(default=DEFAULT_MAX_HEADER_COUNT, gt=0, le=10_000)
    max_header_field_bytes: int = Field(
        default=DEFAULT_MAX_HEADER_FIELD_BYTES, gt=0, le=1024 * 1024
    )
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, gt=0, le=1024 * 1024)
    header_read_timeout_seconds: float = Field(
        default=DEFAULT_HEADER_READ_TIMEOUT_SECONDS, gt=0, le=300
    )
    body_read_timeout_seconds: float = Field(
        default=DEFAULT_BODY_READ_TIMEOUT_SECONDS, gt=0, le=300
    )
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs). Empty: none;
    # the client address is the peer's (Lambda: API Gateway's sourceIp).
    trusted_proxies: str = ""
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, gt=0)
    # "keepalive": gateway.forwarding.transport under httpx's API (fast); "httpcore": httpx's own.
    upstream_transport: Literal["keepalive", "httpcore"] = "keepalive"
    # Durable FIFO queue for writes accepted while their module is down (202), and the
    # ledger table that tracks each of them (pending, applied, refused) and keeps a
    # caller's later writes queued behind earlier ones.
    deferred_queue_url: str | None = None
    deferred_ledger_table: str | None = None
    # Operator controls shared by every gateway instance and the replayer (faults), and
    # the breakers' shared state (off with RELAY_BREAKER_FLEET=false: each decides alone).
    control_table: str | None = None
    breaker_fleet: bool = True
    breaker_refresh_seconds: float = Field(default=DEFAULT_BREAKER_REFRESH_SECONDS, gt=0, le=60)
    breaker_stale_seconds: float = Field(default=DEFAULT_BREAKER_STALE_SECONDS, gt=0, le=600)
    breaker_store_timeout_seconds: float = Field(
        default=DEFAULT_BREAKER_STORE_TIMEOUT_SECONDS, gt=0, le=10
    )
    breaker_refresh: BreakerRefresh = Field(default_factory=default_breaker_refresh)
    breaker_refresh_wait_seconds: float = Field(
        default=DEFAULT_BREAKER_REFRESH_WAIT_SECONDS, gt=0, le=2
    )
    # Canary releases (gateway.release): each instance reads the control table's releases at
    # start-up and every release_refresh_seconds, and adds its calls per version to it every
    # release_stats_flush_seconds (off with RELAY_RELEASES=false: stable versions only).
    releases: bool = True
    release_refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    release_stats_flush_seconds: float = Field(default=0.5, gt=0, le=60)
    # Celled modules (docs/cells.md): the explicit placements of partition keys in cells,
    # read at start-up and every placement_refresh_seconds; unset: every key in its
    # default cell.
    placement_table: str | None = None
    placement_refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    # Regions (docs/regions.md): the routing controls every region's gateways read (a
    # global table), read at start-up and every routing_refresh_seconds; this gateway's peer
    # regions in order of preference (RELAY_REGION_PEERS, comma-separated); and their
    # critical modules' upstreams, JSON {"<region>": {"<module>": "<upstream>"}} (local
    # runs; unset in AWS, where each peer's URLs are read from its own SSM under ssm_path).
    routing_table: str | None = None
    routing_refresh_seconds: float = Field(default=1.0, gt=0, le=60)
    region_peers: str = ""
    peer_upstreams: str = ""
    # Module URLs published by the modules' stacks (/relay/<stage>/<module>/url), read
    # again every upstream_refresh_seconds; unset (local runs): routes.toml's URLs only.
    ssm_path: str | None = None
    upstream_refresh_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Deadlines of the gateway's own AWS calls (each inside the request's answer time).
    queue_timeout_seconds: float = Field(default=DEFAULT_QUEUE_TIMEOUT_SECONDS, gt=0, le=10)
    store_timeout_seconds: float = Field(default=DEFAULT_STORE_TIMEOUT_SECONDS, gt=0, le=10)
    # Load shedding by tier (RELAY_SHED_LOAD=false: off; forced tiers are still shed).
    shed_load: bool = Field(default_factory=default_shedding)
    shed_max_in_flight: int = Field(default=DEFAULT_SHED_MAX_IN_FLIGHT, gt=0, le=100_000)
    shed_max_delay_ms: float = Field(default=DEFAULT_SHED_MAX_DELAY_MS, gt=0, le=10_000)
    shed_at_optional: float = Field(default=DEFAULT_SHED_AT_OPTIONAL, gt=0, le=1)
    shed_at_deferrable: float = Field(default=DEFAULT_SHED_AT_DEFERRABLE, gt=0, le=1)
    shed_at_degradable: float = Field(default=DEFAULT_SHED_AT_DEGRADABLE, gt=0, le=1)
    shed_at_critical: float = Field(default=DEFAULT_SHED_AT_CRITICAL, gt=0, le=1)
    shed_retry_after_seconds: int = Field(default=DEFAULT_SHED_RETRY_AFTER_SECONDS, ge=1, le=60)
    # Last-known-good copies kept per fallback (LRU across drivers).
    cache_entries: int = Field(default=DEFAULT_CACHE_ENTRIES, ge=100, le=1_000_000)
    # The fallback store (gateway.fallbackstore): the critical fallbacks' second layer,
    # shared by every instance, read under store_timeout_seconds; unset: this process only.
    fallback_store_table: str | None = None
    max_keepalive_connections: int = Field(default=DEFAULT_MAX_KEEPALIVE, gt=0)
    # Below the modules' own keep-alive timeout (uvicorn: 5 s), so a reused connection is
    # never one the module is closing.
    keepalive_expiry_seconds: float = Field(default=DEFAULT_KEEPALIVE_EXPIRY_SECONDS, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        from gateway.edge.clientaddr import parse_networks

        parse_networks(value)  # a typo is a start-up error, not a per-request surprise
        return value

    @property
    def header_limits(self) -> HeaderLimits:
        return HeaderLimits(
            max_count=self.max_header_count,
            max_field_bytes=self.max_header_field_bytes,
            max_bytes=self.max_header_bytes,
        )

    @property
    def peers(self) -> list[str]:
        """The peer regions: RELAY_REGION_PEERS, then any RELAY_PEER_UPSTREAMS names."""
        from gateway.regions.peers import parse_peer_upstreams

        named = [p.strip() for p in self.region_peers.split(",") if p.strip()]
        return named + [p for p in parse_peer_upstreams(self.peer_upstreams) if p not in named]

    @field_validator("peer_upstreams")
    @classmethod
    def _peer_upstreams(cls, value: str) -> str:
        from gateway.regions.peers import parse_peer_upstreams

        parse_peer_upstreams(value)  # a typo is a start-up error
        return value

    @property
    def client_ids(self) -> frozenset[str]:
        return frozenset(c.strip() for c in self.token_client_ids.split(",") if c.strip())

    @model_validator(mode="after")
    def _safe_outside_local(self) -> GatewaySettings:
        if self.stage in LOCAL_STAGES:
            return self
        if self.jwks_url and not self.jwks_url.startswith("https://"):
            raise ValueError(f"stage {self.stage!r} needs an https:// JWKS URL")
        if self.identity_signing_key:
            raise ValueError(f"stage {self.stage!r} takes its identity key from a secret")
        return self
