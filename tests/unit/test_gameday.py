"""relay gameday without a stack: outcome classes, invariants, journal reading (a deviated
journal fails the run), the experiments' validity, and the report's matrix and chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from relay.gameday import invariants, journal, report, runner
from relay.gameday.load import LoadConfig, SyntheticLoad, Trip, trip_events
from relay.gameday.outcome import Call, Function, Outcome, Tally, classify, tally
from relay.gameday.target import Target
from shared_contracts.identity import Role


def call(function: Function, status: int | None, headers: dict[str, str] | None = None) -> Call:
    return Call(function, status, classify(status, headers), 0.01, "" if status else "ReadTimeout")


# --- outcomes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, Outcome.LIVE),
        (201, {"content-type": "application/json"}, Outcome.LIVE),
        (
            200,
            {"Relay-Degraded": "module=loads; fallback=last-known-good; age=3"},
            Outcome.DEGRADED,
        ),
        (202, {}, Outcome.DEGRADED),
        (503, {"relay-degraded": "module=loads"}, Outcome.FAILED),
        (504, {}, Outcome.FAILED),
        (409, {}, Outcome.FAILED),
        (None, None, Outcome.FAILED),
    ],
)
def test_a_call_is_live_degraded_or_failed(status, headers, expected):
    assert classify(status, headers) is expected


def test_a_cell_is_the_worst_outcome_with_its_share():
    # GIVEN 197 live answers, 2 degraded and 1 without an answer
    calls = [call(Function.LOADS_READ, 200)] * 197 + [call(Function.LOADS_READ, 202)] * 2
    calls.append(call(Function.LOADS_READ, None))
    t = tally(calls)[Function.LOADS_READ]
    # THEN the cell shows the failure, never rounded away
    assert t.worst is Outcome.FAILED
    assert t.cell() == "failed <1% (1/200)"
    assert t.statuses == {"200": 197, "202": 2, "ReadTimeout": 1}
    assert Tally.from_json(t.to_json()).cell() == t.cell()
    assert tally([call(Function.NAVIGATE, 200)] * 3)[Function.NAVIGATE].cell() == "live 100%"
    assert tally([])[Function.MESSAGE].cell() == "-"


# --- invariants -----------------------------------------------------------------------


def tallies(**by_function: list[int | None]) -> dict[Function, Tally]:
    """Function name (underscores) -> statuses; a 2xx in 250.. carries Relay-Degraded."""
    calls = []
    for name, statuses in by_function.items():
        f = Function[name.upper()]
        for s in statuses:
            degraded = s is not None and 250 <= s < 300
            calls.append(
                call(f, 200 if degraded else s, {"relay-degraded": "x"} if degraded else {})
            )
    return tally(calls)


def test_critical_answered_needs_every_critical_call_answered():
    ok = tallies(
        loads_read=[200, 250], event_write=[202, 201], gatepass=[200], gatepass_verify=[200]
    )
    assert invariants.critical_answered(ok).passed
    # a navigate failure is not critical; one event write without an answer is
    broken = tallies(loads_read=[200], event_write=[202, None], navigate=[503])
    inv = invariants.critical_answered(broken)
    assert not inv.passed
    assert inv.detail == "2/3 answered (66.7%): event write 1 failed"


def test_isolation_needs_the_other_modules_live():
    # GIVEN loads is faulted: its own calls do not count
    fine = tallies(loads_read=[None], event_write=[202, 202], message=[200, 201], navigate=[200])
    inv = invariants.isolation(fine, ["loads"])
    assert inv.passed and inv.detail == "3/3 calls of the other modules live"
    # a message write queued (202) while only loads is down is the fault spreading
    queued = tallies(loads_read=[None], message=[200, 202, 202], navigate=[200])
    assert invariants.isolation(queued, ["loads"]).detail == "not live: message 2/3"
    # a failure of another module breaks it, and so do degraded answers past the slack
    assert not invariants.isolation(tallies(gatepass=[200] * 40 + [503]), ["loads"]).passed
    assert not invariants.isolation(tallies(navigate=[200, 250, 250]), ["loads"]).passed
    # one degraded answer in 40 (a slow call on a busy host) is within it, and said
    within = invariants.isolation(tallies(navigate=[200] * 39 + [250]), ["loads"])
    assert within.passed and "degraded within the slack: navigate 1/40" in within.detail
    assert invariants.isolation(tallies(navigate=[200] * 17 + [250]), ["loads"]).passed  # one
    assert not invariants.isolation(tallies(navigate=[200] * 38 + [250] * 3), ["loads"]).passed
    # the faulted module's own functions do not count; the emulator reaches every module
    assert invariants.isolation(tallies(loads_read=[None, 250]), ["loads"]).passed
    assert not invariants.isolation(tallies(navigate=[None]), ["*"]).applicable


def test_writes_lost_or_applied_twice_break_their_invariants():
    clean = {"answered": 10, "applied": 10, "duplicates": 3, "lost": [], "twice": []}
    assert invariants.nothing_lost(clean).passed and invariants.nothing_twice(clean).passed
    lost = {**clean, "applied": 9, "lost": ["L-1: 3 of 4 applied"]}
    assert not invariants.nothing_lost(lost).passed
    assert "L-1: 3 of 4 applied" in invariants.nothing_lost(lost).detail
    twice = {**clean, "twice": ["L-1: version 6, 5 expected"]}
    assert not invariants.nothing_twice(twice).passed
    assert not invariants.nothing_lost({**clean, "answered": 0, "applied": 0}).passed
    assert not invariants.recovered(None, 60).passed
    assert invariants.recovered(4.5, 60).detail == "every function live 4.5 s after the undo"


# --- journals -------------------------------------------------------------------------


def summary(**overrides: Any) -> dict[str, Any]:
    t = tallies(loads_read=[200, 250], event_write=[202], gatepass=[200], gatepass_verify=[200])
    checks = invariants.check_all(
        t, {"answered": 1, "applied": 1, "duplicates": 0}, ["loads"], 3.0, 60
    )
    return {
        "scenario": "loads-killed",
        "calls": 5,
        "functions": {f.value: x.to_json() for f, x in t.items()},
        "invariants": [i.to_json() for i in checks],
        **overrides,
    }


def a_journal(*, status="completed", deviated=False, rollback="succeeded", summary_=None):
    experiment = json.loads((runner.SCENARIO_DIR / "loads-killed.json").read_text())
    return {
        "experiment": experiment,
        "status": status,
        "deviated": deviated,
        "duration": 31.5,
        "steady_states": {
            "before": {"steady_state_met": True, "probes": []},
            "after": {
                "steady_state_met": not deviated,
                "probes": [
                    {"activity": {"name": "invariants-hold"}, "tolerance_met": not deviated}
                ],
            },
        },
        "run": [
            {"activity": {"name": "start-load"}, "status": "succeeded", "output": {}},
            {
                "activity": {"name": "finish-load"},
                "status": "succeeded",
                "output": summary() if summary_ is None else summary_,
            },
        ],
        "rollbacks": [{"activity": {"name": "start-loads"}, "status": rollback}],
    }


def test_a_completed_journal_within_its_hypothesis_passes():
    verdict = journal.read(a_journal())
    assert verdict.ok, verdict.problems
    assert (verdict.scenario, verdict.title) == (
        "loads-killed",
        "loads killed (kill -9, held down)",
    )
    assert verdict.summary is not None and verdict.summary["calls"] == 5


def test_a_deviated_journal_fails_though_run_experiment_raises_nothing():
    verdict = journal.read(a_journal(deviated=True))
    assert not verdict.ok
    assert "the steady-state hypothesis deviated" in verdict.problems
    assert "probe invariants-hold did not hold after the fault" in verdict.problems


def test_failed_rollbacks_aborted_runs_and_broken_invariants_fail():
    assert not journal.read(a_journal(rollback="failed")).ok
    assert "the experiment aborted" in journal.read(a_journal(status="aborted")).problems
    no_summary = a_journal()
    no_summary["run"].pop()
    assert not journal.read(no_summary).ok
    broken = summary()
    broken["invariants"][0] = {**broken["invariants"][0], "passed": False, "detail": "1/2"}
    problems = journal.read(a_journal(summary_=broken)).problems
    assert problems == ["invariant critical answered broken: 1/2"]


def test_the_command_exits_non_zero_on_a_deviated_journal(tmp_path, monkeypatch):
    # GIVEN a running stack's state directory and an experiment run that deviates
    (tmp_path / "stack.json").write_text(json.dumps({"gateway_url": "http://127.0.0.1:9"}))
    monkeypatch.setenv("RELAY_STATE_DIR", str(tmp_path))
    ran: list[dict] = []

    def run_experiment(experiment, settings=None, **_):
        ran.append(experiment)
        return a_journal(deviated=True)

    monkeypatch.setattr("chaoslib.experiment.run_experiment", run_experiment)
    # WHEN relay gameday runs it against that stack
    code = runner.main(["loads-killed"], short=True, running=True, report_path=None)
    # THEN it fails, having pinned the experiment to the stack and the short hold
    assert code == 1
    assert ran[0]["configuration"]["relay_state_dir"] == str(tmp_path)
    assert ran[0]["configuration"]["relay_gameday_seconds"] == str(runner.SHORT_SECONDS)
    assert (tmp_path / "gamedays" / "loads-killed.journal.json").exists()
    # and passes once the journal does
    monkeypatch.setattr("chaoslib.experiment.run_experiment", lambda e, **_: a_journal())
    assert runner.main(["loads-killed"], short=True, running=True, report_path=None) == 0


# --- the experiments ------------------------------------------------------------------


def test_every_scenario_is_a_valid_experiment_that_undoes_its_fault():
    from chaoslib.experiment import ensure_experiment_is_valid  # type: ignore[import-untyped]

    found = runner.scenarios()
    assert {"notifications-down", "loads-killed", "gatepass-killed", "navigate-killed"} <= set(
        found
    )
    assert {"message-killed", "loads-blackholed", "navigate-slow", "emulator-down"} <= set(found)
    assert found["loads-cell-1-blackholed"].cells == 2
    for scenario in found.values():
        ensure_experiment_is_valid(scenario.experiment)  # imports each provider, checks args
        method = [a["name"] for a in scenario.experiment["method"]]
        rollbacks = [a["name"] for a in scenario.experiment["rollbacks"]]
        assert method[0] == "start-load" and method[-1] == "finish-load", scenario.name
        undo = method[-2]
        assert undo in rollbacks, f"{scenario.name}: {undo} is not a rollback"
        assert scenario.relay["scenario"] == scenario.name


def test_unknown_scenarios_are_refused_by_name():
    with pytest.raises(runner.ScenarioError, match="no scenario nope"):
        runner.select(["nope"])
    assert [s.name for s in runner.select(["loads-killed"])] == ["loads-killed"]
    assert len(runner.select(["all"])) == len(runner.scenarios())


def test_a_trip_has_every_event_in_order():
    assert trip_events(2) == [("arrived", 1), ("departed", 1), ("arrived", 2), ("delivered", 2)]
    assert (LoadConfig(seconds=4).trips, LoadConfig(seconds=20).trips) == (2, 4)
    with pytest.raises(ValueError, match="positive"):
        LoadConfig(seconds=0)


# --- the report -----------------------------------------------------------------------


def verdicts() -> list[journal.Verdict]:
    broken = summary(scenario="navigate-killed")
    broken["functions"][Function.NAVIGATE.value] = tallies(navigate=[200, None])[
        Function.NAVIGATE
    ].to_json()
    broken["invariants"][3] = {
        "name": "isolation",
        "passed": False,
        "detail": "not live: navigate 1/2",
        "applicable": True,
    }
    journal_ = a_journal(summary_=broken)
    return [journal.read(a_journal(), "loads-killed"), journal.read(journal_, "navigate-killed")]


def test_the_matrix_is_a_markdown_table_of_scenarios_by_function():
    table = report.matrix(verdicts()).splitlines()
    assert table[0].startswith("| scenario | loads read | event write | gate pass issue/read |")
    assert len(table) == 4
    assert table[2].startswith("| loads-killed | degraded 50% (1/2) | degraded 100% (1/1) |")
    assert table[2].endswith("| pass |")
    assert "| failed 50% (1/2) |" in table[3] and table[3].endswith("| **FAIL** |")


def test_the_report_says_when_from_what_how_to_rerun_and_each_invariant(tmp_path):
    run = report.Run("2026-12-04 15:00 UTC", "abc1234567", "relay gameday all", 20.0, 312.0)
    text = report.markdown(verdicts(), run, "gamedays.svg")
    assert "on 2026-12-04 15:00 UTC from tree `abc1234567`, in 312 s: 1 of 2" in text
    assert "make gameday" in text and "chaos run gamedays/<scenario>.json" in text
    assert "![The matrix as a heat map](gamedays.svg)" in text
    assert "**FAIL**: not live: navigate 1/2" in text
    assert "| loads-killed | pass: 5/5 answered (100.0%) |" in text


def test_the_chart_is_an_svg_heat_map_with_one_cell_per_scenario_and_function():
    root = ET.fromstring(report.svg(verdicts()))  # noqa: S314 - our own output
    ns = "{http://www.w3.org/2000/svg}"
    cells = [r for r in root.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(cells) == 2 * len(Function)
    fills = {r.find(f"{ns}title").text: r.get("fill") for r in cells}  # type: ignore[union-attr]
    assert fills["loads-killed / loads read: degraded 50% (1/2)"] == report.COLORS[Outcome.DEGRADED]
    assert fills["navigate-killed / navigate: failed 50% (1/2)"] == report.COLORS[Outcome.FAILED]
    assert fills["loads-killed / gate pass verify: live 100%"] == report.COLORS[Outcome.LIVE]


def test_the_report_and_chart_are_written_side_by_side(tmp_path: Path):
    md, chart = runner.write_report(
        verdicts(),
        tmp_path / "gamedays.md",
        command="relay gameday all",
        seconds=20,
        wall_seconds=1,
    )
    assert chart == tmp_path / "gamedays.svg" and chart.read_text().startswith("<svg")
    assert "](gamedays.svg)" in md.read_text()


def test_an_invariant_the_scenario_expects_to_break_is_said_not_failed():
    # GIVEN a scenario that expects event writes to fail while storage is down
    t = tallies(loads_read=[250], event_write=[None, 503], gatepass=[200], gatepass_verify=[200])
    writes = {"answered": 1, "applied": 1, "duplicates": 0}
    why = {"critical answered": "the deferred queue itself is down"}
    checked = invariants.check_all(t, writes, ["*"], 2.0, 60, why)
    # THEN it broke, as expected, and the journal's verdict is still a pass that says so
    critical = checked[0]
    assert (critical.passed, critical.expected, critical.holds) == (
        False,
        "the deferred queue itself is down",
        True,
    )
    out = summary(invariants=[i.to_json() for i in checked])
    verdict = journal.read(a_journal(summary_=out))
    assert verdict.ok and verdict.expected == [
        "critical answered broken as expected: 3/5 answered (60.0%): event write 2 failed"
    ]
    run = report.Run("2026-12-04 15:00 UTC", "abc", "relay gameday all", 20.0)
    assert "breaks by design: the deferred queue itself is down" in report.markdown(
        [verdict], run, None
    )
    assert "| broken, as expected (below): 3/5 answered" in report.invariants_table([verdict])
    assert report.matrix([verdict]).endswith("| pass, as expected |")
    # an expectation that names no invariant is refused; one that holds is not marked
    with pytest.raises(ValueError, match="no invariant named nothing-lost"):
        invariants.check_all(t, writes, ["*"], 2.0, 60, {"nothing-lost": "?"})
    assert not invariants.check_all(t, writes, ["*"], 2.0, 60, {"recovered": "?"})[4].expected


# --- the load's own checks, against a fake gateway --------------------------------------


class FakeGateway:
    """Answers event writes (201 live, or 202 queued) and reads back the loads' versions.
    ``lose``: queued writes it never applies; ``twice``: it applies duplicates again."""

    def __init__(self, *, queue: bool = False, lose: bool = False, twice: bool = False) -> None:
        self.queue, self.lose, self.twice = queue, lose, twice
        self.applied: dict[str, list[str]] = {}  # load id -> keys, in order
        self.deferred: dict[str, str] = {}  # tracking id -> state

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, key = request.url.path, request.headers.get("idempotency-key")
        if request.method == "POST" and path.endswith("/events"):
            load_id = path.split("/")[2]
            keys = self.applied.setdefault(load_id, [])
            if (key not in keys or self.twice) and not (self.queue and self.lose):
                keys.append(key)
            if self.queue:
                self.deferred[key] = "refused" if self.lose else "applied"
                body = {"status": "accepted", "tracking_id": key, "status_url": f"/deferred/{key}"}
                return httpx.Response(202, json=body, headers={"relay-degraded": "x"})
            return httpx.Response(201, json={"seq": keys.index(key) + 1, "load_id": load_id})
        if path.startswith("/deferred/"):
            return httpx.Response(200, json={"state": self.deferred[path.split("/")[2]]})
        if path.startswith("/loads/"):
            return httpx.Response(200, json={"version": 1 + len(self.applied.get(path[7:], []))})
        if path.startswith("/message"):
            return httpx.Response(200, json={"items": [], "next_cursor": None})
        return httpx.Response(404)


def drive(gateway: FakeGateway, tmp_path: Path, events: int = 4):
    """A driver reporting ``events`` events of one trip through ``gateway``; the check."""
    target = Target(tmp_path, {"gateway_url": "http://gateway.test"})
    load = SyntheticLoad(
        target, LoadConfig(drivers=("D-1001",), seconds=1), transport=httpx.MockTransport(gateway)
    )
    load.trips["D-1001"] = [Trip("L-1", trip_events(2))]
    auth = target.auth(Role.DRIVER, "D-1001")
    with load._client() as client:
        for _ in range(events):
            load._next_event(client, "D-1001", auth)
        return load, load._check(client, deadline=0)


def test_every_answered_event_applied_once_passes_with_its_duplicates(tmp_path):
    load, check = drive(FakeGateway(), tmp_path)
    assert (check.answered, check.applied, check.lost, check.twice) == (4, 4, [], [])
    assert check.duplicates == 2  # the 1st and the 4th answered event were sent twice
    assert tally(load.calls)[Function.EVENT_WRITE].cell() == "live 100%"


def test_a_queued_event_never_applied_is_lost(tmp_path):
    _, check = drive(FakeGateway(queue=True, lose=True), tmp_path, events=1)
    assert check.lost == ["L-1 arrived 1: deferred write refused", "L-1: 0 of 1 applied"]


def test_a_duplicate_applied_again_is_caught(tmp_path):
    _, check = drive(FakeGateway(twice=True), tmp_path, events=1)
    assert check.twice == ["L-1: version 3, 2 expected"]


def test_a_write_answered_503_is_sent_again_with_its_key_after_retry_after(tmp_path):
    # GIVEN a gateway whose first answer to each event is 503 + Retry-After: 0
    inner, refused = FakeGateway(), set()

    def gateway(request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if request.url.path.endswith("/events") and key not in refused:
            refused.add(key)
            return httpx.Response(503, json={"code": "unavailable"}, headers={"retry-after": "0"})
        return inner(request)

    # WHEN a driver reports one event (sent twice: the trip's first is duplicated)
    load, check = drive(gateway, tmp_path, events=1)  # type: ignore[arg-type]
    # THEN each call is recorded once, by its last answer, and applied once
    assert [(c.function, c.status) for c in load.calls] == [(Function.EVENT_WRITE, 201)] * 2
    assert (check.answered, check.applied, check.lost, check.twice) == (1, 1, [], [])


def test_a_celled_modules_name_stands_for_each_of_its_cells(tmp_path):
    from relay.gameday.target import TargetError
    from relay.supervisor import ControlServer

    # GIVEN a supervised two-cell stack's control socket
    names = ["emulator", "loads/cell-1", "loads/cell-2", "gatepass", "gateway"]
    rows = [{"name": n, "pid": 100 + k} for k, n in enumerate(names)]
    server = ControlServer(
        tmp_path / "control.sock", lambda request: {"ok": True, "processes": rows}
    )
    server.start()
    try:
        target = Target(tmp_path, {"control_socket": str(tmp_path / "control.sock")})
        # THEN loads is both cells, a process name itself, and an unknown name is refused
        assert target.resolve("loads") == ["loads/cell-1", "loads/cell-2"]
        assert target.resolve("gatepass") == ["gatepass"]
        assert target.pid("loads/cell-2") == 102
        with pytest.raises(TargetError, match="no process named 'navigate'"):
            target.resolve("navigate")
    finally:
        server.close()
    # a stack that is not supervised cannot have its processes killed by name
    with pytest.raises(TargetError, match="not supervised"):
        Target(tmp_path, {"gateway_url": "http://127.0.0.1:9"}).resolve("loads")
