"""The contract tier: consumer tests that write pact files, provider verifications that
replay every pact against each module alone (tests/contracts/pacts.py).

Modules are verified against moto in-process: the functional tier's ``aws`` and
``deployed`` fixtures. ``module_env`` is a module function's environment on an uncelled
stage (a celled ``LOADS_TABLE`` names its first cell's table).
"""

from __future__ import annotations

import os

import pytest

from module_kit.cells import parse_cells
from tests.functional.conftest import aws, deployed  # noqa: F401 - fixtures, registered by import

# Pact's core reports usage to the Pact Foundation unless told not to: this tier stays on
# loopback.
os.environ["PACT_DO_NOT_TRACK"] = "true"


@pytest.fixture
def module_env(deployed, monkeypatch):  # noqa: F811 - the fixture imported above
    def env_of(function: str) -> dict[str, str]:
        env = deployed.use_env(monkeypatch, function)
        cells = (
            parse_cells(env["LOADS_TABLE"], setting="LOADS_TABLE") if "LOADS_TABLE" in env else {}
        )
        if cells:
            env = {**env, "LOADS_TABLE": next(iter(cells.values()))}
            monkeypatch.setenv("LOADS_TABLE", env["LOADS_TABLE"])
        return env

    return env_of
