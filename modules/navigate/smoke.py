"""The navigate function's smoke requests, sent by its deploy hooks (module_kit.deploy_hooks)
to a new version before it takes traffic and through the alias after."""

from module_kit.deploy_hooks import SERVED, SMOKE_DRIVER, Probe, status

SERVICE = "navigate"
_QUERY = "load_id=L-SMOKE&lat=41.88&lon=-87.63"
PROBES = [
    Probe("alive", "GET", "/healthz", None, status(200)),
    Probe("no identity is refused", "GET", "/navigate", None, status(401), query=_QUERY),
    # The signed context is accepted and the loads table is read (no such load: 404).
    Probe("a signed driver is served", "GET", "/navigate", SMOKE_DRIVER, SERVED, query=_QUERY),
]
