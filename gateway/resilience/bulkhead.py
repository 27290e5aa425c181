"""Bulkheads: a cap on concurrent calls per module; when full, fail over at once."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_CONCURRENT = 64


class BulkheadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent: int = Field(default=DEFAULT_MAX_CONCURRENT, ge=1, le=10_000)


class BulkheadFullError(Exception):
    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"bulkhead {name} is full ({limit} calls in flight)")
        self.name = name


class Bulkhead:
    """Not a queue: a call that does not fit is refused immediately (asyncio, one thread)."""

    def __init__(self, name: str, config: BulkheadConfig | None = None) -> None:
        self.name = name
        self.config = config or BulkheadConfig()
        self.in_flight = 0
        self.rejected = 0

    def __enter__(self) -> Bulkhead:
        if self.in_flight >= self.config.max_concurrent:
            self.rejected += 1
            raise BulkheadFullError(self.name, self.config.max_concurrent)
        self.in_flight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.in_flight -= 1
