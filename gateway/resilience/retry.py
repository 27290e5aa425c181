"""Retries that never multiply an outage: only safe requests, jittered backoff, a budget.

A request is retried only when repeating it cannot do harm (an idempotent method, or a
write carrying an ``Idempotency-Key``), only after a failure that says the module did not
answer (connection error, timeout, 502/503/504), and only while the retry budget allows:
retries may be at most ``budget_ratio`` of recent requests, plus a small floor per second
so a quiet gateway can still retry. When the budget is spent, the failure goes to the
fallback at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

Clock = Callable[[], float]

DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_BASE_DELAY_SECONDS = 0.025
DEFAULT_MAX_DELAY_SECONDS = 0.25
DEFAULT_BUDGET_RATIO = 0.2
DEFAULT_BUDGET_MIN_PER_SECOND = 3.0
DEFAULT_BUDGET_WINDOW_SECONDS = 10
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class RetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=5)
    base_delay_seconds: float = Field(default=DEFAULT_BASE_DELAY_SECONDS, ge=0, le=5)
    max_delay_seconds: float = Field(default=DEFAULT_MAX_DELAY_SECONDS, ge=0, le=30)


class BudgetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(default=DEFAULT_BUDGET_RATIO, gt=0, le=1)
    min_per_second: float = Field(default=DEFAULT_BUDGET_MIN_PER_SECOND, ge=0, le=1000)
    window_seconds: int = Field(default=DEFAULT_BUDGET_WINDOW_SECONDS, ge=1, le=300)


def is_retry_safe(method: str, has_idempotency_key: bool) -> bool:
    return method.upper() in IDEMPOTENT_METHODS or has_idempotency_key


def backoff_delay(attempt: int, config: RetryConfig, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
    cap = min(config.max_delay_seconds, config.base_delay_seconds * 2 ** (attempt - 1))
    return (rng or random).uniform(0, cap)


class RetryBudget:
    """Counts requests and retries in per-second buckets over a sliding window."""

    def __init__(
        self, config: BudgetConfig | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.config = config or BudgetConfig()
        self.clock = clock
        size = self.config.window_seconds
        self._requests = [0] * size
        self._retries = [0] * size
        self._stamps = [-1] * size

    def _slot(self) -> int:
        second = int(self.clock())
        i = second % len(self._stamps)
        if self._stamps[i] != second:
            self._stamps[i], self._requests[i], self._retries[i] = second, 0, 0
        return i

    def _totals(self) -> tuple[int, int]:
        now = int(self.clock())
        horizon = now - len(self._stamps)
        live = [i for i, s in enumerate(self._stamps) if s > horizon]
        return sum(self._requests[i] for i in live), sum(self._retries[i] for i in live)

    def record_request(self) -> None:
        self._requests[self._slot()] += 1

    def available(self) -> float:
        """Retries the budget would allow now (the retry-budget gauge in ``/metrics``)."""
        requests, retries = self._totals()
        allowed = self.config.ratio * requests + self.config.min_per_second * len(self._stamps)
        return max(0.0, allowed - retries)

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is one."""
        if self.available() < 1:
            return False
        self._retries[self._slot()] += 1
        return True
