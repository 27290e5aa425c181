"""Chaos Toolkit actions (the ``python`` provider: ``relay.gameday.actions`` + func +
arguments). Each fault has its undo, named in the experiment's method (undone before the
after-check) and again in its rollbacks (undone even when the method stopped halfway):

=========================  =================================  ==========================
fault                      action                             undo
=========================  =================================  ==========================
gateway fault on a module  ``inject_fault(module, kind)``     ``clear_fault(module)``
a process killed (-9)      ``kill_process(name)``             ``start_process(name)``
a process stopped          ``stop_process(name)``             ``start_process(name)``
a process frozen (STOP)    ``freeze_process(name)``           ``resume_process(name)``
=========================  =================================  ==========================

``kind`` is a gateway fault kind (gateway/resilience/faults.py): ``error`` (503 instead of
calling, with ``error_rate``), ``blackhole`` (never answers: the module's deadline ends the
wait) or ``latency`` (``latency_ms`` before each call). The synthetic load runs from
``start_load`` to ``finish_load``, which settles the stack and returns the scenario's
numbers and invariants (kept in the journal as the activity's output).

Every function takes ``configuration`` (the experiment's): ``relay_state_dir`` finds the
stack (relay.gameday.target), ``relay_gameday_seconds`` is how long the fault holds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import Any

import httpx

from shared_contracts.identity import Role

from . import session
from .target import Target, TargetError

FAULT_TTL_SECONDS = 300  # a fault the rollback never cleared still ends by itself
HTTP_TIMEOUT_SECONDS = 10.0
Configuration = Mapping[str, Any] | None


def _ops(target: Target) -> httpx.Client:
    return httpx.Client(
        base_url=target.gateway_url,
        headers=target.auth(Role.OPS),
        timeout=HTTP_TIMEOUT_SECONDS,
    )


def inject_fault(
    module: str,
    kind: str,
    latency_ms: int = 0,
    error_rate: float = 1.0,
    ttl_seconds: int = FAULT_TTL_SECONDS,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """``PUT /ops/faults/<module>`` on the gateway (``loads``, ``loads/cell-1`` ...)."""
    spec: dict[str, Any] = {"kind": kind, "ttl_seconds": ttl_seconds, "reason": "relay gameday"}
    if kind == "latency":
        spec["latency_ms"] = latency_ms
    if kind == "error":
        spec["error_rate"] = error_rate
    with _ops(Target.find(configuration)) as ops:
        r = ops.put(f"/ops/faults/{module}", json=spec)
    if r.status_code != 200:
        raise TargetError(f"PUT /ops/faults/{module}: {r.status_code} {r.text[:300]}")
    return dict(r.json())


def clear_fault(module: str, configuration: Configuration = None) -> bool:
    """``DELETE /ops/faults/<module>`` (204 whether or not one was set)."""
    with _ops(Target.find(configuration)) as ops:
        r = ops.delete(f"/ops/faults/{module}")
    if r.status_code != 204:
        raise TargetError(f"DELETE /ops/faults/{module}: {r.status_code} {r.text[:300]}")
    return True


def kill_process(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """``kill -9`` the process (a celled module's name: each of its cells), then hold it
    down (no restart) until ``start_process``."""
    target = Target.find(configuration)
    pids = target.signal(name, signal.SIGKILL)
    target.each("stop", name)  # held: the supervisor leaves it down
    return {"name": name, "pids": pids, "signal": "SIGKILL"}


def stop_process(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """Stop the process (SIGTERM) and hold it down until ``start_process``."""
    return {"name": name, "said": Target.find(configuration).each("stop", name)}


def start_process(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """Start a held process again; waits until it answers its health check."""
    return {"name": name, "said": Target.find(configuration).each("start", name)}


def freeze_process(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """SIGSTOP: the process keeps its sockets and answers nothing (a hung dependency)."""
    pids = Target.find(configuration).signal(name, signal.SIGSTOP)
    return {"name": name, "pids": pids, "signal": "SIGSTOP"}


def resume_process(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """SIGCONT (harmless on a process that is not frozen)."""
    pids = Target.find(configuration).signal(name, signal.SIGCONT)
    return {"name": name, "pids": pids, "signal": "SIGCONT"}


def start_load(scenario: str, configuration: Configuration = None) -> dict[str, Any]:
    """Fresh trip loads and passes for the drivers, caches warmed, then the load's threads."""
    load = session.new_load(
        scenario, Target.find(configuration), session.load_config(configuration)
    )
    load.setup()
    load.start()
    return {"run_id": load.run_id, "drivers": list(load.config.drivers), "trips": load.config.trips}


def hold_fault(seconds: float | None = None, configuration: Configuration = None) -> float:
    """Keep the fault in force while the load runs: the configured seconds, at most
    ``seconds`` (a brief fault)."""
    held = session.load_config(configuration).seconds
    if seconds is not None:
        held = min(held, float(seconds))
    time.sleep(held)
    return held


def finish_load(
    scenario: str,
    faulted: list[str],
    expected: dict[str, str] | None = None,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Stop the load, let the stack settle, check every answered write: the summary.
    ``faulted``: the modules the fault reaches ("*": every one); ``expected``: invariants
    the scenario expects to break, by name, and why (said in the report)."""
    return session.finish(scenario, faulted, expected)


def stop_load(scenario: str, configuration: Configuration = None) -> bool:
    """Rollback: stop the load's threads if the method did not (harmless otherwise)."""
    return session.stop(scenario)
