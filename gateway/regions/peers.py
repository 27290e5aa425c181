"""The peer regions' addresses of this region's critical modules.

Both the gateway (its failover upstreams, :class:`gateway.regions.router.Regions`) and the
deferred-write replayer (a queued write whose module is down here is applied in a peer
region) call a critical module in a peer region. Where a peer's modules are:

- locally, ``RELAY_PEER_UPSTREAMS`` names them (the local stack knows every process);
- in AWS, each peer region's stacks publish their URLs in that region's SSM, under the
  same names as this region's (``/relay/<stage>/loads/cell-1/url``): the addresses start
  as placeholders that answer nothing (``*.invalid``) and a :class:`ModuleDirectory` on
  the peer's SSM replaces them on its first read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewaySettings
from gateway.routing.routes import ModuleConfig, RouteTable, Tier, elsewhere, module_units

SEPARATOR = ":"  # between a peer region and the unit it serves: "us-west-2:loads/cell-1"


def peer_unit(region: str, unit: str) -> str:
    return f"{region}{SEPARATOR}{unit}"


def parse_peer_upstreams(raw: str) -> dict[str, dict[str, str]]:
    """``RELAY_PEER_UPSTREAMS``: ``{"<region>": {"<module>": "<upstream>"}}``, each upstream
    as routes.toml writes it (one URL, or "cell-1=URL,cell-2=URL")."""
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(m, dict) and all(isinstance(u, str) for u in m.values()) for m in data.values()
    ):
        raise ValueError('RELAY_PEER_UPSTREAMS is {"<region>": {"<module>": "<upstream>"}}')
    return data


def peer_configs(
    settings: GatewaySettings, table: RouteTable
) -> dict[str, dict[str, ModuleConfig]]:
    """Each peer region's critical module units, by the local unit each stands in for
    (``loads/cell-1`` -> that cell in the peer region), in order of preference."""
    named = parse_peer_upstreams(settings.peer_upstreams)
    critical = [m for m in table.modules.values() if m.tier is Tier.CRITICAL]
    out: dict[str, dict[str, ModuleConfig]] = {}
    for peer in settings.peers:
        specs = named.get(peer)
        units: dict[str, ModuleConfig] = {}
        for module in critical:
            if specs is not None and module.name not in specs:
                continue  # the local stack names the modules the peer runs
            where = specs[module.name] if specs is not None else placeholders(module, peer)
            units.update(module_units(elsewhere(module, where)))
        out[peer] = units
    return out


def published(settings: GatewaySettings, peer: str) -> bool:
    """Whether ``peer``'s URLs come from its SSM (AWS) rather than RELAY_PEER_UPSTREAMS."""
    return bool(settings.ssm_path) and peer not in parse_peer_upstreams(settings.peer_upstreams)


def placeholders(module: ModuleConfig, peer: str) -> str:
    """An address that answers nothing until the peer's published URL replaces it."""
    host = f"{module.name}.{peer}.invalid"
    if not module.celled:
        return f"https://{host}"
    return ",".join(f"{cell}=https://{cell}.{host}" for cell in module.cells)


@dataclass
class PeerAddress:
    """A peer's base URL where no upstream is kept (the replayer); a ModuleDirectory on the
    peer's SSM may rebase it."""

    base_url: str
    auth: Any = None  # how calls there are signed (SigV4 for that region), if at all

    def rebase(self, url: str) -> None:
        self.base_url = url
