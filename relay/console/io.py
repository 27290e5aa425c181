"""The critical input/output metrics for the console, from the modules' EMF log lines.

Each pair (or triple) compares what went in with what came out: load assignments created
vs seen by their driver, load events accepted vs applied, notifications enqueued vs
delivered vs dead-lettered, gate passes issued vs verified. The counts come from
:mod:`relay.emf` (the local stand-in for CloudWatch's EMF extraction, reading
``.relay/logs/*.log``); :func:`critical_io` sums each metric over its dimensions.
Without ``relay.emf`` the panel says so and lists nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# (panel title, [(label, metric name), ...]): the names the modules emit (docs/operations.md)
PAIRS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Load assignments",
        (
            ("created", "relay_loads_assignments_created_total"),
            ("seen", "relay_loads_assignments_seen_total"),
            ("served degraded", "relay_gateway_loads_served_degraded_total"),
        ),
    ),
    (
        "Load events",
        (
            ("accepted", "relay_loads_events_accepted_total"),
            ("applied", "relay_loads_events_applied_total"),
        ),
    ),
    (
        "Notifications",
        (
            ("enqueued", "relay_notifications_enqueued_total"),
            ("delivered", "relay_notifications_delivered_total"),
            ("dead-lettered", "relay_notifications_dead_lettered_total"),
        ),
    ),
    (
        "Gate passes",
        (
            ("issued", "relay_gatepass_passes_issued_total"),
            ("verified", "relay_gatepass_passes_verified_total"),
            ("verified offline", "relay_gateway_passes_verified_offline_total"),
        ),
    ),
)

Reader = Callable[[Path], Any]


def emf_reader() -> Reader | None:
    """``relay.emf.collect`` (or a ``poll``-able reader), if that module is there."""
    try:
        emf = importlib.import_module("relay.emf")
    except ImportError:
        return None
    collect = getattr(emf, "collect", None)
    return collect if callable(collect) else None


def metric_totals(data: Any) -> dict[str, float]:
    """Each metric name's value summed over its dimensions: ``relay.emf.collect``'s
    ``totals``, or from a list of series (``{"metrics"|"series": [{"name", "value"|"sum"}]}``)
    or a mapping (``{name: number | {"sum"|"value"|"count": n} | [series ...]}``)."""
    out: dict[str, float] = {}
    if isinstance(data, Mapping) and isinstance(data.get("totals"), Mapping):
        return {str(k): n for k, v in data["totals"].items() if (n := _number(v)) is not None}

    def add(name: str, value: Any) -> None:
        number = _number(value)
        if number is not None:
            out[name] = out.get(name, 0.0) + number

    if isinstance(data, Mapping):
        for key in ("metrics", "series"):
            if isinstance(data.get(key), list | Mapping):
                data = data[key]
                break
    if isinstance(data, list):
        for row in data:
            if isinstance(row, Mapping) and "name" in row:
                add(str(row["name"]), row)
        return out
    if isinstance(data, Mapping):
        for name, value in data.items():
            if isinstance(value, list):
                for row in value:
                    add(str(name), row)
            else:
                add(str(name), value)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        for field in ("value", "sum", "total", "count"):
            if field in value:
                return _number(value[field])
    return None


def critical_io(log_dir: Path | None, reader: Reader | None = None) -> dict[str, Any]:
    """The panel: each pair's counts, or why there are none."""
    reader = reader or emf_reader()
    if reader is None:
        return {
            "available": False,
            "reason": "no EMF reader (relay.emf) in this tree: the modules' metrics are not read",
            "pairs": [],
        }
    if log_dir is None:
        return {"available": False, "reason": "the console was given no log directory", "pairs": []}
    try:
        data = reader(log_dir)
        totals = metric_totals(data)
    except Exception as exc:  # a reader's bug never takes the page down
        return {"available": False, "reason": f"reading the EMF lines failed: {exc!r}", "pairs": []}
    return {
        "available": True,
        "delays": _delays(data),
        "pairs": [
            {
                "title": title,
                "values": [
                    {"label": label, "metric": name, "value": totals.get(name)}
                    for label, name in members
                ],
            }
            for title, members in PAIRS
        ],
    }


def _delays(data: Any) -> list[dict[str, Any]]:
    """The observations (``*_seconds``) among ``relay.emf``'s series: count, p50, p90, max."""
    series = data.get("series") if isinstance(data, Mapping) else None
    out: dict[str, dict[str, Any]] = {}
    for row in series if isinstance(series, list) else []:
        if not isinstance(row, Mapping) or not str(row.get("name", "")).endswith("_seconds"):
            continue
        name = str(row["name"])
        if name.startswith("relay_gateway_request_duration"):
            continue  # the gateway's latency: the rates' panel is about requests
        seen = out.setdefault(name, {"metric": name, "count": 0, "p50": None, "p90": None})
        seen["count"] += int(row.get("count") or 0)
        for q in ("p50", "p90", "max"):  # the worst dimension set's
            if isinstance(row.get(q), int | float):
                seen[q] = max(seen.get(q) or 0.0, float(row[q]))
    return sorted(out.values(), key=lambda d: d["metric"])
