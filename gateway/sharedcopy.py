"""An instance's copy of state every gateway instance shares (the releases, the cell
placements), kept current without ever slowing a request.

- **At start-up** (:meth:`SharedCopy.load_at_start`): a process reads it before it serves;
  a Lambda execution environment (no start-up step) on its first request, which waits for
  that one read (the requests that come meanwhile share it). A store that does not answer
  in time leaves the instance without a copy until the next refresh, which the owner
  treats as "nothing shared yet" (stable versions only, default cells).
- **Then every** ``refresh_seconds`` (:meth:`SharedCopy.keep_current`, from the request
  path): one read at a time, in the background, on the AWS thread pool with a deadline; a
  failed read keeps the last copy and waits for the next period.
- **Fresh enough** (:meth:`SharedCopy.fresh`): a caller that must not act on an old copy
  reads it now (one read, within the deadline) when the last good read is older than it
  accepts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from gateway import aws_calls

T = TypeVar("T")
log = logging.getLogger("relay.gateway.sharedcopy")


class SharedCopy(Generic[T]):
    """``read`` (synchronous, boto3) gives the store's state; ``apply`` takes it in."""

    def __init__(
        self,
        read: Callable[[], T] | None,
        apply: Callable[[T], None],
        *,
        what: str,
        clock: Callable[[], float],
        refresh_seconds: float,
        timeout_seconds: float,
    ) -> None:
        self.read = read
        self.apply = apply
        self.what = what  # the store, as log lines and deadlines name it
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self.started_at = -math.inf  # the last read started (one per refresh period)
        self.read_at = -math.inf  # the last read that succeeded: the copy's age
        self.refreshing: asyncio.Future[T] | None = None
        self._first_load: asyncio.Future[None] | None = None
        # Whether a first copy was read (or tried): until then a request waits for it.
        self.loaded = read is None

    @property
    def due(self) -> bool:
        return self.clock() - self.started_at >= self.refresh_seconds

    def refresh(self) -> None:
        """Read now (synchronous: tests, tools, the replayer)."""
        if self.read is None:
            return
        self.started_at = self.clock()
        state = self.read()
        self.loaded = True
        self._took(state)

    async def load_at_start(self) -> None:
        if self.loaded:
            return
        if self._first_load is None:
            self._first_load = asyncio.ensure_future(self._load_first())
        await asyncio.shield(self._first_load)

    async def _load_first(self) -> None:
        if self.read is None:
            return
        try:
            state = await aws_calls.call(
                self.read, timeout=self.timeout_seconds * 4, what=self.what
            )
        except Exception as exc:
            log.error("could not read the %s at start-up (%r); none yet", self.what, exc)
            self.started_at = self.clock()  # the next read is the background refresh's
            return
        finally:
            self.loaded = True
        self.started_at = self.clock()
        self._took(state)

    def keep_current(self) -> asyncio.Future[T] | None:
        """On the request path: start a background read once per period; the read it
        started (or the one under way), if any."""
        if self.read is None or self.refreshing is not None or not self.due:
            return self.refreshing
        self.started_at = self.clock()  # one read per period, even if it fails
        read = self.read

        def done(future: asyncio.Future[T]) -> None:
            self.refreshing = None
            if future.cancelled():
                return
            if future.exception() is not None:
                log.error(
                    "could not read the %s (%r); keeping the last copy",
                    self.what,
                    future.exception(),
                )
                return
            self._took(future.result())

        self.refreshing = asyncio.ensure_future(
            aws_calls.call(read, timeout=self.timeout_seconds, what=self.what)
        )
        self.refreshing.add_done_callback(done)
        return self.refreshing

    def is_fresh(self, stale_seconds: float) -> bool:
        """Whether the copy was read less than ``stale_seconds`` ago (or there is no
        store, so nothing to be stale about)."""
        return self.read is None or self.clock() - self.read_at < stale_seconds

    async def fresh(self, stale_seconds: float) -> bool:
        """Whether the copy was read less than ``stale_seconds`` ago, reading it now if
        not (the read under way, or a new one; within the deadline). False: it could not
        be read, or a read failed moments ago (not one read per request)."""
        if self.is_fresh(stale_seconds):
            return True
        running = self.keep_current()
        if running is None:
            return False  # a read failed moments ago
        try:
            await asyncio.wait_for(asyncio.shield(running), self.timeout_seconds)
        except Exception:
            return False  # said by the read's own callback
        return self.clock() - self.read_at < stale_seconds

    def _took(self, state: T) -> None:
        self.apply(state)
        self.read_at = self.clock()
