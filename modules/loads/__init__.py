"""Loads (critical): a driver's load assignments and the events they report."""
