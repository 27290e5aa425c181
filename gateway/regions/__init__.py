"""Regions: the routing controls (which regions serve), and failover of critical modules to
another region's upstreams (docs/regions.md)."""
