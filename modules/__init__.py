"""Relay modules. Each is deployed on its own and imports only ``shared_contracts`` (the
contracts) and ``module_kit`` (the runtime), never another module."""
