"""The EMF lines a module writes, captured: a stream to give its ``ModuleMetrics``."""

from __future__ import annotations

import io
import json
from typing import Any


class CapturedMetrics(io.StringIO):
    """A ``ModuleMetrics(stream=...)`` that keeps every EMF line it is given."""

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]

    def values(self, name: str, **labels: str) -> list[float]:
        """Every value written for ``name`` on lines carrying ``labels``, in order."""
        return [
            value
            for line in self.lines()
            if name in line and all(line.get(k) == v for k, v in labels.items())
            for value in line[name]
        ]
