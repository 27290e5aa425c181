"""relay gameday against a running stack, as an operator runs it against `relay dev`: two
short game days (loads black-holed, notifications down) pass, their faults really took
effect, every answered write was applied once, and the report is written."""

from __future__ import annotations

import json

from relay.gameday.outcome import Function
from tests.integration.conftest import run_relay

SCENARIOS = ("loads-blackholed", "notifications-down")
TIMEOUT_SECONDS = 120


def test_short_game_days_pass_and_write_the_matrix(supervised_stack, tmp_path):
    stack = supervised_stack
    report = tmp_path / "gamedays.md"
    # WHEN relay gameday runs two scenarios, briefly, against the running stack
    r = run_relay(
        stack,
        "gameday",
        *SCENARIOS,
        "--short",
        "--running",
        "--report",
        str(report),
        timeout=TIMEOUT_SECONDS,
    )
    # THEN both pass
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 of 2 game days passed" in r.stdout
    journals = {
        name: json.loads((stack.state_dir / "gamedays" / f"{name}.journal.json").read_text())
        for name in SCENARIOS
    }
    for journal in journals.values():
        assert (journal["status"], journal["deviated"]) == ("completed", False)

    def summary(name: str) -> dict:
        return next(
            e["output"] for e in journals[name]["run"] if e["activity"]["name"] == "finish-load"
        )

    # AND the black hole was real: loads answered from fallbacks, events were queued (202)
    # and applied after the fault was cleared, each once
    blackholed = summary("loads-blackholed")
    loads_read = blackholed["functions"][Function.LOADS_READ.value]
    events = blackholed["functions"][Function.EVENT_WRITE.value]
    assert loads_read["degraded"] > 0 and loads_read["failed"] == 0
    assert events["statuses"].get("202", 0) > 0 and events["failed"] == 0
    writes = blackholed["writes"]
    assert writes["answered"] > 0 and writes["applied"] == writes["answered"]
    assert writes["lost"] == [] and writes["twice"] == [] and writes["duplicates"] > 0
    # while notifications being down touched no function of a driver's day
    quiet = summary("notifications-down")["functions"]
    assert all(t["live"] == t["calls"] for t in quiet.values())
    # AND the report has the matrix, both scenarios and the chart
    text = report.read_text()
    assert "| loads-blackholed | degraded" in text and "| notifications-down | live 100%" in text
    assert (tmp_path / "gamedays.svg").read_text().startswith("<svg")
