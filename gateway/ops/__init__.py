"""The gateway's own endpoints for operators and app developers: operator views and
levers (``operators.py``), the published API document (``apidoc.py`` serving
``openapi.json``)."""
