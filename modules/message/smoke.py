"""The message function's smoke requests, sent by its deploy hooks (module_kit.deploy_hooks)
to a new version before it takes traffic and through the alias after."""

from module_kit.deploy_hooks import SERVED, SMOKE_DRIVER, Probe, status

SERVICE = "message"
PROBES = [
    Probe("alive", "GET", "/healthz", None, status(200)),
    Probe("no identity is refused", "GET", "/message", None, status(401), query="limit=1"),
    # The signed context is accepted and the messages table answers.
    Probe("a signed driver is served", "GET", "/message", SMOKE_DRIVER, SERVED, query="limit=1"),
]
