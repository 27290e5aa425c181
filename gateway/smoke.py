"""The gateway function's smoke requests, sent by its deploy hooks (module_kit.deploy_hooks)
to a new version before it takes traffic and through the alias after.

The hooks hold no driver token, so the gateway is smoked as the edge: it is alive, refuses
a call without a token, and forwards a public route to its module (SigV4 signing, the
route table, the module's function URL).
"""

from module_kit.deploy_hooks import SERVED, Limits, Probe, status

SERVICE = "gateway"
PROBES = [
    Probe("alive", "GET", "/healthz", None, status(200)),
    Probe("no token is refused", "GET", "/loads", None, status(401)),
    Probe("a public route is forwarded", "GET", "/gatepass/keys", None, SERVED),
]
# Callers with an expired or foreign token are answered 401 by the gateway itself: only a
# version refusing most of its callers is a broken release.
LIMITS = Limits(max_401_ratio=0.5)
