"""The synthetic load of each scenario in progress, shared by the actions and the probes of
one experiment run (``chaos run`` and ``relay gameday`` run them in one process)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from . import invariants
from .load import DEFAULT_SECONDS, DEFAULT_SETTLE_SECONDS, LoadConfig, SyntheticLoad
from .outcome import tally
from .target import Target

SECONDS_KEY = "relay_gameday_seconds"
SETTLE_KEY = "relay_gameday_settle_seconds"

_lock = threading.Lock()
_loads: dict[str, SyntheticLoad] = {}
_summaries: dict[str, dict[str, Any]] = {}


def load_config(configuration: Mapping[str, Any] | None) -> LoadConfig:
    configuration = configuration or {}
    return LoadConfig(
        seconds=float(configuration.get(SECONDS_KEY) or DEFAULT_SECONDS),
        settle_seconds=float(configuration.get(SETTLE_KEY) or DEFAULT_SETTLE_SECONDS),
    )


def new_load(scenario: str, target: Target, config: LoadConfig) -> SyntheticLoad:
    load = SyntheticLoad(target, config)
    with _lock:
        old = _loads.pop(scenario, None)
        _summaries.pop(scenario, None)
        _loads[scenario] = load
    if old is not None:
        old.stop()
    return load


def finish(
    scenario: str, faulted: list[str], expected: Mapping[str, str] | None = None
) -> dict[str, Any]:
    with _lock:
        load = _loads.get(scenario)
    if load is None:
        raise RuntimeError(f"no load is running for {scenario}: start_load first")
    load.stop()
    writes = load.settle().to_json()
    tallies = tally(load.calls)
    checked = invariants.check_all(
        tallies, writes, faulted, load.recovery_seconds, load.config.settle_seconds, expected
    )
    summary = {
        "scenario": scenario,
        "run_id": load.run_id,
        "faulted": list(faulted),
        "seconds": load.config.seconds,
        "calls": len(load.calls),
        "functions": {f.value: t.to_json() for f, t in tallies.items()},
        "writes": writes,
        "recovery_seconds": load.recovery_seconds,
        "invariants": [i.to_json() for i in checked],
    }
    with _lock:
        _summaries[scenario] = summary
    return summary


def stop(scenario: str) -> bool:
    with _lock:
        load = _loads.get(scenario)
    if load is None:
        return False
    load.stop()
    return True


def summary(scenario: str) -> dict[str, Any] | None:
    with _lock:
        return _summaries.get(scenario)


def forget(scenario: str) -> None:
    with _lock:
        _loads.pop(scenario, None)
        _summaries.pop(scenario, None)
