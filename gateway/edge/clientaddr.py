"""Who is calling, as far as the network can tell: the client address anonymous rate
limits are keyed by.

A client can write anything into ``X-Forwarded-For``; only a proxy we run appends what it
actually saw. So the header counts only when the peer is one of ``trusted_proxies``, and
then its right-most address that is not itself a trusted proxy is the client (everything
left of that was written by the client or by proxies we do not know). With no trusted
proxies (the default) the client is the peer: ``scope["client"]``, which the server fills
from the socket (``gateway.edge.server`` runs uvicorn with ``proxy_headers=False``) and Mangum
from API Gateway's ``requestContext...sourceIp`` on Lambda.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.types import Scope

_XFF = b"x-forwarded-for"
UNKNOWN_CLIENT = "-"
_PEER_CACHE = 4096  # trusted-or-not answers kept per address


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` -> networks; raises ValueError on anything else."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


class ClientAddress:
    """``client_address(scope)`` -> the address to key anonymous limits by."""

    def __init__(self, trusted_proxies: str = "") -> None:
        self.networks = parse_networks(trusted_proxies)
        self._trusted = lru_cache(maxsize=_PEER_CACHE)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def __call__(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else UNKNOWN_CLIENT
        if not self.networks or not self._trusted(peer):
            return peer
        hops = [
            hop.strip()
            for name, value in scope["headers"]
            if name == _XFF
            for hop in value.decode("latin-1").split(",")
        ]
        for hop in reversed(hops):
            if hop and not self._trusted(hop):
                return hop
        return peer  # every hop is one of ours (or there are none): the peer is the client
