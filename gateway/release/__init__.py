"""Canary releases in the gateway: release state, version routing, per-version stats."""
