"""The loads function's smoke requests, sent by its deploy hooks (module_kit.deploy_hooks)
to a new version before it takes traffic and through the alias after."""

from module_kit.deploy_hooks import SERVED, SMOKE_DRIVER, Probe, status

SERVICE = "loads"
PROBES = [
    Probe("alive", "GET", "/healthz", None, status(200)),
    Probe("no identity is refused", "GET", "/loads", None, status(401)),
    # The signed context is accepted and the loads table answers (no loads: 200, empty).
    Probe("a signed driver is served", "GET", "/loads", SMOKE_DRIVER, SERVED),
]
