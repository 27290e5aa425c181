"""Deferred writes: accepted with 202 into a durable queue while their module is down
(``queue.py``), tracked in the ledger (``ledger.py``), replayed in order (``replayer.py``),
and their state asked for at ``GET /deferred/{tracking_id}`` (``tracking.py``)."""
