"""Header names the gateway and the modules agree on."""

REQUEST_ID = "x-request-id"
IDENTITY = "x-relay-identity"
IDEMPOTENCY_KEY = "idempotency-key"
IDEMPOTENCY_KEY_PATTERN = r"[A-Za-z0-9_-]{8,64}"
DEGRADED = "relay-degraded"
# When the gateway accepted a write (RFC 3339, UTC), set by the gateway on every forwarded
# write and kept on a deferred replay: modules stamp the write with it, not with the time
# a late delivery arrives.
ACCEPTED_AT = "x-relay-accepted-at"
# Which release of a module produced an answer: set by every module on every response
# (module_kit.app.module_app); the gateway reads it and never forwards it to clients.
VERSION = "x-relay-version"

PROBLEM_MEDIA_TYPE = "application/problem+json"
