"""The edge: the gateway as a long-running process (uvicorn with the edge limits) and the
client address anonymous rate limits are keyed by."""
