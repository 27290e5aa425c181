"""Chaos Toolkit probes (``relay.gameday.probes``), the steady-state hypothesis of every game
day: the gateway answers, every function of a driver's day answers live, and the scenario's
invariants held (relay.gameday.invariants). The hypothesis is checked before the method and
after it; the method undoes its fault and settles the stack before the after-check.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

from shared_contracts.identity import Role

from . import session
from .outcome import Outcome, classify
from .target import Target

LIVE_WITHIN_SECONDS = 60.0
Configuration = Mapping[str, Any] | None


def gateway_answers(configuration: Configuration = None) -> bool:
    target = Target.find(configuration)
    try:
        return httpx.get(target.gateway_url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def functions_live(
    driver: str = "D-1001",
    within_seconds: float = LIVE_WITHIN_SECONDS,
    configuration: Configuration = None,
) -> bool:
    """Each read of a driver's day answers live (no fallback), within ``within_seconds``
    (a breaker opened by the previous scenario closes after its reset timeout)."""
    target = Target.find(configuration)
    deadline = time.monotonic() + within_seconds
    with httpx.Client(
        base_url=target.gateway_url, headers=target.auth(Role.DRIVER, driver), timeout=5
    ) as client:
        while True:
            if _all_live(client):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def _all_live(client: httpx.Client) -> bool:
    try:
        loads = client.get("/loads")
        if classify(loads.status_code, loads.headers) is not Outcome.LIVE:
            return False
        paths = ["/gatepass", "/message?limit=5"]
        items = loads.json().get("items", [])
        if items:
            paths.append(f"/navigate?load_id={items[0]['load_id']}&lat=41.88&lon=-87.63")
        for path in paths:
            r = client.get(path)
            if classify(r.status_code, r.headers) is not Outcome.LIVE:
                return False
    except httpx.HTTPError:
        return False
    return True


def invariants_hold(scenario: str, configuration: Configuration = None) -> bool:
    """The invariants of the scenario's finished load all held; before the load has run
    (the hypothesis's first check) there is nothing to hold yet: True."""
    summary = session.summary(scenario)
    if summary is None:
        return True
    return all(
        i["passed"] or not i["applicable"] or i.get("expected") for i in summary["invariants"]
    )
