"""Relay modules. Each is deployed on its own and imports only ``shared_contracts``."""
