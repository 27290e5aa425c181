"""The route table: which module serves a path and how it is called (``routes.toml``, data,
read by ``routes.py``)."""
