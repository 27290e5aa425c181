"""Relay gateway: one FastAPI app that path-routes the mobile API to the modules."""
