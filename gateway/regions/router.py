"""Which region's upstream a request goes to: this region's, or a peer region's.

A gateway runs in one region (``AWS_REGION``) and calls that region's modules. For its
critical modules it also keeps an upstream per peer region (``us-west-2:loads/cell-1``:
region, module, cell), each with its own breaker, bulkhead and retry budget, and sends a
request to a serving peer region's upstream instead of its own when

- its own region is evacuated (the routing controls, :mod:`gateway.regions.control`: the
  front door moves new traffic within seconds, and requests that still reach this region,
  say from a client holding an old DNS answer, are served by the other region's modules),
- or its own upstream's breaker is open and not yet due a probe (the module is down here:
  automatic failover). Once the breaker's reset timeout passes, the next request probes
  this region again, so traffic comes home by itself when the module recovers.

A peer whose breaker is open too is not chosen (this region's breaker then fails fast and
the route's fallback answers). Writes sent to a peer keep their idempotency key: the
modules' idempotency records are global tables, so a retry in either region is applied
once (up to the replication lag, docs/regions.md).

The routing controls are read as the cells' placements are (:class:`SharedCopy`): at
start-up, then every ``refresh_seconds`` in the background.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.regions.control import RegionControl, RoutingControlSource, serving
from gateway.sharedcopy import SharedCopy

if TYPE_CHECKING:
    from gateway.forwarding.upstream import ModuleUpstream
    from gateway.routing.directory import ModuleDirectory


class Regions:
    """This gateway's region, its peers in order of preference, and their upstreams."""

    def __init__(
        self,
        region: str,
        peers: Sequence[str],
        peer_upstreams: Mapping[str, Mapping[str, ModuleUpstream]],
        source: RoutingControlSource | None,
        *,
        directories: Sequence[ModuleDirectory] = (),
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = 1.0,
        timeout_seconds: float = 0.5,
    ) -> None:
        self.region = region
        self.peers = list(peers)
        # unit ("loads/cell-1") -> [(peer region, its upstream)], in order of preference
        self.failover: dict[str, list[tuple[str, ModuleUpstream]]] = {}
        for peer in self.peers:
            for unit, upstream in peer_upstreams.get(peer, {}).items():
                self.failover.setdefault(unit, []).append((peer, upstream))
        self.controls: dict[str, RegionControl] = {}
        # In AWS: each peer's module URLs, as its stacks publish them in its own SSM.
        self.directories = list(directories)
        self.copy = SharedCopy(
            source.load if source is not None else None,
            self._apply,
            what="routing controls",
            clock=clock,
            refresh_seconds=refresh_seconds,
            timeout_seconds=timeout_seconds,
        )
        self.sent: Counter[str] = Counter()  # "<unit> -> <peer>" requests sent to a peer

    @property
    def regions(self) -> list[str]:
        return [self.region, *self.peers]

    @property
    def evacuated(self) -> bool:
        return not serving(self.controls, self.region)

    async def load_at_start(self) -> None:
        await self.copy.load_at_start()

    def route(self, unit: str, local: ModuleUpstream) -> ModuleUpstream:
        """``local``, or the upstream of a serving peer region to send this request to."""
        peers = self.failover.get(unit)
        if not peers:
            return local
        self.copy.keep_current()
        for directory in self.directories:
            directory.keep_current()
        away = self.evacuated
        if not away and local.breaker.allows():
            return local
        for region, upstream in peers:
            if serving(self.controls, region) and upstream.breaker.allows():
                self.sent[f"{unit} -> {region}"] += 1
                return upstream
        return local

    def _apply(self, controls: dict[str, RegionControl]) -> None:
        self.controls = controls

    def view(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "serving": not self.evacuated,
            "peers": self.peers,
            "controls": {
                region: (self.controls.get(region) or RegionControl(region)).view()
                for region in self.regions
            },
            "failover_units": {
                unit: [upstream.name for _, upstream in peers]
                for unit, peers in sorted(self.failover.items())
            },
            "sent_to_peers": dict(self.sent),
        }
