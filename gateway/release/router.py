"""Which version of a module a caller's request goes to while the module is being released.

Every gateway instance keeps a copy of the control table's releases
(:mod:`gateway.release.state`), read at start-up and again every ``refresh_seconds`` (in
the background, from the request path: a slow store never slows a request; the last copy
stays in force). With a release running at weight ``w``, a caller goes to the canary when
the hash of the release id and the caller's ``sub`` falls in the first ``w`` percent:

- **sticky**: the same driver lands on the same version on every request and every
  instance for the whole release, so an app never flips between versions within a flow;
  as the weight grows, the drivers already on the canary stay there (their bucket stays
  below it) and new ones join;
- **fresh per release**: a new release id draws a new share of drivers, so the same
  drivers are not always the ones who try new versions;
- callers with no identity (public routes) stay on the stable version.

Each version has its own :class:`~gateway.forwarding.upstream.ModuleUpstream` (breaker,
bulkhead, retry budget), made when a release names it: a failing canary opens its own
breaker (``loads@<version>``), never the stable version's. A release that names the stable
version's URL (the local stack's promoted process) moves the stable upstream there.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from gateway.forwarding.upstream import ModuleUpstream
from gateway.release.state import Release, ReleaseSource
from gateway.release.stats import ReleaseStats
from gateway.sharedcopy import SharedCopy

log = logging.getLogger("relay.gateway.release")

DEFAULT_REFRESH_SECONDS = 1.0
BUCKETS = 10_000  # a caller's place in the release: 0..9999, compared with weight x 100

MakeUpstream = Callable[[str, str, str], ModuleUpstream]  # (module, version, url)


def canary_bucket(release_id: str, caller: str) -> int:
    """The caller's place in ``release_id``'s order (stable across instances and restarts:
    CRC-32 of both, not Python's per-process ``hash``)."""
    return zlib.crc32(f"{release_id}:{caller}".encode()) % BUCKETS


def on_canary(release: Release, caller: str | None) -> bool:
    return caller is not None and canary_bucket(release.release_id, caller) < release.weight * (
        BUCKETS // 100
    )


class Releases:
    """The releases as this instance last read them, and each version's upstream."""

    def __init__(
        self,
        store: ReleaseSource | None,
        stable: Mapping[str, ModuleUpstream],
        make_upstream: MakeUpstream,
        *,
        stats: ReleaseStats | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        timeout_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.stable = stable
        self.make_upstream = make_upstream
        self.stats = stats or ReleaseStats(None)  # each version's calls, for the controller
        self.clock = clock
        self.current: dict[str, Release] = {}  # module -> its release, as last read
        self.canaries: dict[str, ModuleUpstream] = {}  # module -> the running canary's upstream
        self.routing: dict[str, Release] = {}  # the releases whose canary takes traffic now
        self._canary_of: dict[str, tuple[str, str]] = {}  # module -> (version, url)
        self.copy = SharedCopy(
            self._load if store is not None else None,
            self.apply,
            what="control table",
            clock=clock,
            refresh_seconds=refresh_seconds,
            timeout_seconds=timeout_seconds,
        )

    @property
    def loaded(self) -> bool:
        """Whether a first copy was read (or tried): until then a request waits for it."""
        return self.copy.loaded

    # --- choosing ------------------------------------------------------------------------

    def choose(self, module: str, caller: str | None) -> tuple[ModuleUpstream, Release | None]:
        """The upstream for this caller's request, and the module's release when its canary
        takes traffic (None otherwise)."""
        self.copy.keep_current()
        release = self.routing.get(module)
        if release is None:
            return self.stable[module], None
        if on_canary(release, caller):
            return self.canaries[module], release
        return self.stable[module], release

    # --- the copy --------------------------------------------------------------------------

    def apply(self, releases: dict[str, Release]) -> None:
        """Take a new copy of the releases: make the canaries' upstreams, move the stable
        ones where a release says, and log what changed."""
        for module, release in releases.items():
            if module not in self.stable:
                continue  # a module this gateway does not route to
            before = self.current.get(module)
            if before is None or before.revision != release.revision:
                self._log_change(release)
            stable = self.stable[module]
            if release.stable_url and release.stable_url.rstrip("/") != stable.base_url:
                log.warning("module %s: stable version is at %s", module, release.stable_url)
                stable.rebase(release.stable_url.rstrip("/"))  # its breaker starts afresh
            wanted = (release.canary_version, release.canary_url.rstrip("/"))
            if release.phase == "running" and self._canary_of.get(module) != wanted:
                self.canaries[module] = self.make_upstream(module, *wanted)
                self._canary_of[module] = wanted
        self.current = {m: r for m, r in releases.items() if m in self.stable}
        self.routing = {m: r for m, r in self.current.items() if r.routing and m in self.canaries}

    def _log_change(self, release: Release) -> None:
        log.warning(
            "release %s of %s: %s at %g%% on %s (stable %s; by %s)",
            release.release_id,
            release.module,
            release.phase,
            release.weight,
            release.canary_version,
            release.stable_version,
            release.updated_by or "?",
        )

    def _load(self) -> dict[str, Release]:
        store = self.store
        return {} if store is None else store.load()

    def refresh(self) -> None:
        """Read the releases now (synchronous: tests, tools)."""
        self.copy.refresh()

    async def load_at_start(self) -> None:
        """The first copy, before the instance serves: a gateway restarted mid-release routes
        its first request as the fleet does (:meth:`SharedCopy.load_at_start`). A store
        that does not answer in time leaves every module on its stable version until the
        next refresh."""
        await self.copy.load_at_start()

    def view(self) -> dict[str, Any]:
        """As ``/ops/status`` shows it: each release, its canary's breaker and bulkhead, and
        this instance's calls per version."""
        out: dict[str, Any] = {}
        for module, release in sorted(self.current.items()):
            out[module] = release.view() | {"calls": self.stats.view(module)}
            canary = self.canaries.get(module)
            if canary is not None and release.phase == "running":
                out[module]["canary"] = {
                    "breaker": asdict(canary.breaker.snapshot()),
                    "bulkhead": {
                        "in_flight": canary.bulkhead.in_flight,
                        "rejected": canary.bulkhead.rejected,
                    },
                }
        return out
