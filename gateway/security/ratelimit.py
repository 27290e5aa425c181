"""Rate limits per caller and route: token buckets, answered with 429 and Retry-After."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from shared_contracts.errors import ProblemError

DEFAULT_MAX_BUCKETS = 100_000


class RateLimitedError(ProblemError):
    status, code, title = 429, "rate-limited", "Too many requests"


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_second: float = Field(gt=0, le=10_000)
    burst: int = Field(ge=1, le=100_000)

    @classmethod
    def parse(cls, text: str) -> Limit:
        rate, _, burst = text.partition("/")
        return cls(per_second=float(rate), burst=int(burst or rate))


class RateLimiter:
    """Buckets keyed by (caller, route); the least recently used are forgotten first."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = DEFAULT_MAX_BUCKETS
    ) -> None:
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def check(self, caller: str, route: str, limit: Limit) -> None:
        now = self.clock()
        key = (caller, route)
        tokens, last = self._buckets.get(key, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - last) * limit.per_second)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1 - tokens) / limit.per_second)
            raise RateLimitedError(
                f"slow down: at most {limit.per_second:g} requests per second on {route}",
                headers={"Retry-After": str(wait)},
            )
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
