"""Header names the gateway and the modules agree on."""

REQUEST_ID = "x-request-id"
IDENTITY = "x-relay-identity"
IDEMPOTENCY_KEY = "idempotency-key"
IDEMPOTENCY_KEY_PATTERN = r"[A-Za-z0-9_-]{8,64}"
DEGRADED = "relay-degraded"

PROBLEM_MEDIA_TYPE = "application/problem+json"
