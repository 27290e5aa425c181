"""The gatepass function's smoke requests, sent by its deploy hooks (module_kit.deploy_hooks)
to a new version before it takes traffic and through the alias after."""

from module_kit.deploy_hooks import SERVED, SMOKE_DRIVER, Probe, status

SERVICE = "gatepass"
PROBES = [
    Probe("alive", "GET", "/healthz", None, status(200)),
    Probe("no identity is refused", "GET", "/gatepass", None, status(401)),
    # Public: the signing key's public half is read from KMS.
    Probe("the pass keys are published", "GET", "/gatepass/keys", None, status(200)),
    # The signed context is accepted and the passes table answers.
    Probe("a signed driver is served", "GET", "/gatepass", SMOKE_DRIVER, SERVED),
]
