"""Forwarding: one request to its module, the pipeline's last step (``Forward``).

Its steps, in order, each one small unit with one job that calls the next (plain calls:
nothing is built per request to chain them). :data:`FORWARD_STEPS` is the list, by name
under this package; docs/architecture.md shows the same table and a test holds the two,
and the order the steps run in, together:

    choose upstream -> bulkhead -> retry -> deadline -> breaker -> timeout -> fault
        -> transport -> fallback (when the module gave no answer)

- ``forwarder.py``: ``Forwarder.forward`` chooses the route's upstream and fallback and
  builds the request as the module gets it; ``Forwarder._degrade`` is the fallback;
- ``upstream.py``: ``ModuleUpstream.send`` starts the deadline and runs the steps from the
  bulkhead to the transport, one method each;
- ``transport.py``: the keep-alive HTTP/1.1 transport under httpx's API;
- ``conditional.py``: on routes with ``etag = true``, the final answer's ``ETag`` and the
  304 for a matching ``If-None-Match`` (applied by ``Forward``, after the steps above).
"""

FORWARD_STEPS: tuple[tuple[str, str], ...] = (
    ("choose upstream", "forwarder.Forwarder.forward"),
    ("bulkhead", "upstream.ModuleUpstream.through_bulkhead"),
    ("retry", "upstream.ModuleUpstream.with_retries"),
    ("deadline", "upstream.ModuleUpstream.within_deadline"),
    ("breaker", "upstream.ModuleUpstream.through_breaker"),
    ("timeout", "upstream.ModuleUpstream.within_timeout"),
    ("fault", "upstream.ModuleUpstream.after_fault"),
    ("transport", "upstream.ModuleUpstream.on_transport"),
    ("fallback", "forwarder.Forwarder._degrade"),
)
