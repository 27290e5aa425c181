"""The fallback store: a table outside every gateway instance, kept current from the
modules' table streams by the projector, read by the critical fallbacks as their second
layer (docs/resilience.md). ``store.py`` reads and writes it; ``projector.py`` is the
stream consumer's Lambda handler."""
