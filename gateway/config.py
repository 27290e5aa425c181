"""Gateway settings: explicit argument, then ``RELAY_*`` environment variable, then default."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared_contracts.http import DEFAULT_MAX_BODY_BYTES

DEFAULT_ROUTES_FILE = Path(__file__).with_name("routes.toml")
DEFAULT_TOKEN_ISSUER = "relay-dev"
DEFAULT_TOKEN_AUDIENCE = "relay-mobile"
DEFAULT_MAX_CONNECTIONS = 200
DEFAULT_MAX_KEEPALIVE = 100
DEFAULT_CACHE_ENTRIES = 20_000
LOCAL_STAGES = {"local", "test"}


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    stage: str = "local"
    routes_file: Path = DEFAULT_ROUTES_FILE
    # Dev tokens (HS256). Only accepted in a local stage; refused elsewhere at start-up.
    dev_token_secret: str | None = Field(default=None, min_length=32)
    token_issuer: str = DEFAULT_TOKEN_ISSUER
    token_audience: str = DEFAULT_TOKEN_AUDIENCE
    # Sign upstream calls with SigV4 (module function URLs use AuthType AWS_IAM in AWS).
    sign_upstreams: bool = False
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, gt=0)
    # Durable FIFO queue for writes accepted while their module is down (202).
    deferred_queue_url: str | None = None
    # Last-known-good copies kept per fallback (LRU across drivers).
    cache_entries: int = Field(default=DEFAULT_CACHE_ENTRIES, ge=100, le=1_000_000)
    max_keepalive_connections: int = Field(default=DEFAULT_MAX_KEEPALIVE, gt=0)

    @model_validator(mode="after")
    def _no_dev_tokens_in_the_cloud(self) -> "GatewaySettings":
        if self.dev_token_secret and self.stage not in LOCAL_STAGES:
            raise ValueError(f"dev tokens are for local stages only, not stage {self.stage!r}")
        return self
