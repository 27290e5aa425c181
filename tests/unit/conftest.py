"""The unit tier: no emulators, no SAM translator, no processes of our own stack; seconds.

A run of the unit tier alone fails if anything it imported pulled in moto or the SAM
translator (those tests belong in tests/functional): checked once the tests have run, so
imports made inside a test count too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent
NOT_IN_THE_UNIT_TIER = ("moto", "samtranslator")


def emulators_imported() -> list[str]:
    return [name for name in NOT_IN_THE_UNIT_TIER if name in sys.modules]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    items = getattr(session, "items", [])
    if not items or not all(item.path.is_relative_to(UNIT) for item in items):
        return  # other tiers ran in the same process: they import both on purpose
    if loaded := emulators_imported():
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"\nFAILED unit tier check: it imported {', '.join(loaded)}: "
                "move the tests that need them to tests/functional",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
