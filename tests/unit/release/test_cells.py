"""A celled module's release (relay/release/cells.py): cell by cell in order, each a full
canary release of its unit, then a bake with a health gate (the cell's fleet breaker, its
release item, what it serves) before the next cell; a regression or a failed gate stops
the release, the failing cell back on its old version and the cells before it kept."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.release.state import Release
from gateway.resilience.fleet import FleetRecord
from relay.release.analysis import Numbers, Verdict
from relay.release.aws import AwsAliasHost
from relay.release.cells import (
    CelledOutcome,
    CellEvent,
    CellOutcome,
    HealthGate,
    cell_order,
    cell_release,
    cells_from_ssm,
    cells_from_state,
    cells_from_status,
    release_cells,
    revert_cell,
)
from relay.release.contract import ContractReport
from relay.release.controller import Progress
from relay.release.deploy import DRAIN_SECONDS, Source, deploy
from relay.release.display import cells_summary, progress_line
from relay.release.exceptions import ReleaseError
from relay.release.plan import parse_plan
from relay.release.policy import Policy

from .fakes import T0, Behaviour, CellsFleet

KEPT = ContractReport("loads", 3, ())
BAKE = 120.0
POLICY = Policy(interval_seconds=60, min_calls=50, cell_bake_seconds=BAKE, tick_seconds=5)


class CellHost:
    """Lambda-style labelled versions per cell unit (as the AWS host): live ``7`` until a
    promotion moves it; every deploy's canary is ``8``."""

    def __init__(self) -> None:
        self.live: dict[str, str] = {}
        self.calls: list[tuple[str, ...]] = []

    def url(self, module: str) -> str:
        return f"https://{module.replace('/', '-')}.live"

    def stable_version(self, module: str) -> str:
        return self.live.get(module, "7")

    def canary_version(self, module: str) -> str:
        return "8"

    def start(self, module: str, source: Path, version: str) -> str:
        self.calls.append(("start", module))
        return f"https://{module.replace('/', '-')}.canary"

    def promote(self, module: str, version: str) -> None:
        self.calls.append(("promote", module, version))
        self.live[module] = version

    def retire(self, module: str, version: str) -> None:
        self.calls.append(("retire", module, version))


@dataclass
class Breakers:
    """The fleet's breaker items, as the control table holds them; ``loads`` counts reads."""

    records: dict[str, FleetRecord] = field(default_factory=dict)
    loads: int = 0

    def load(self) -> dict[str, FleetRecord]:
        self.loads += 1
        return dict(self.records)

    def open(self, unit: str, at: float) -> None:
        self.records[unit] = FleetRecord(
            unit, failures=5, opened_by="gw-1", opened_at=at, until=at + 30, reason="5 failures"
        )


@dataclass
class Run:
    fleet: CellsFleet
    host: CellHost
    breakers: Breakers
    events: list[CellEvent]
    outcome: CelledOutcome


def _loads_contract(module: str, url: str) -> ContractReport:
    assert module == "loads", f"a cell keeps its module's contract, not {module!r}'s"
    return KEPT


def _behaving(how: Behaviour) -> Any:
    return lambda _second: how


def release(
    cells: list[str],
    *,
    canaries: dict[str, Behaviour] | None = None,
    breakers: Breakers | None = None,
    opens: dict[str, float] | None = None,  # unit -> seconds after its promotion
    probe: Any = None,
) -> Run:
    fleet = CellsFleet(calls_per_second=1000)
    for unit, how in (canaries or {}).items():
        fleet.canaries[unit] = _behaving(how)
    host = CellHost()
    breakers = breakers or Breakers()
    events: list[CellEvent] = []

    def run(unit: str) -> Any:
        result = deploy(
            unit,
            Source(Path("/repo"), "abc123"),
            host=host,
            store=fleet.releases,
            stats=fleet.stats,
            policy=POLICY,
            check=_loads_contract,
            clock=fleet.clock,
            sleep=fleet.sleep,
        )
        if result.promoted and unit in (opens or {}):  # the breaker opens during its bake
            at = fleet.now + (opens or {})[unit]
            fleet.at[at] = lambda: breakers.open(unit, at)
        return result

    gate = HealthGate(
        fleet.releases, breakers, probe, tick_seconds=5, clock=fleet.clock, sleep=fleet.sleep
    )
    outcome = release_cells(
        "loads",
        cells,
        lambda unit: cell_release(lambda: run(unit)),
        gate=gate,
        bake_seconds=BAKE,
        revert=lambda promoted, released, result: revert_cell(
            promoted,
            released.previous_version or "",
            released.previous_url,
            host=host,
            store=fleet.releases,
            reasons=result.reasons,
            actor="test",
            clock=fleet.clock,
            sleep=fleet.sleep,
        ),
        on_event=events.append,
    )
    return Run(fleet, host, breakers, events, outcome)


def first_put(fleet: CellsFleet, unit: str) -> float:
    return next(t for t, r in fleet.releases.puts if r.module == unit)


def promoted_at(fleet: CellsFleet, unit: str) -> float:
    return next(t for t, r in fleet.releases.puts if r.module == unit and r.phase == "promoted")


# --- cell by cell ---------------------------------------------------------------------


def test_cells_are_released_in_order_each_baked_and_gated_before_the_next() -> None:
    run = release(["cell-2", "cell-1"])  # given out of order: released by number

    assert run.outcome.promoted
    assert [c.status for c in run.outcome.cells] == ["promoted", "promoted"]
    assert run.host.calls == [
        ("start", "loads/cell-1"),
        ("promote", "loads/cell-1", "8"),
        ("start", "loads/cell-2"),
        ("promote", "loads/cell-2", "8"),
    ]
    # cell-2's release starts only after cell-1's bake (and the release's drain) is over
    assert first_put(run.fleet, "loads/cell-2") >= promoted_at(run.fleet, "loads/cell-1") + BAKE
    assert [(e.kind, e.unit, e.position) for e in run.events] == [
        ("cell", "loads/cell-1", "cell 1/2"),
        ("bake", "loads/cell-1", "cell 1/2"),
        ("gate", "loads/cell-1", "cell 1/2"),
        ("cell", "loads/cell-2", "cell 1/2".replace("1/", "2/")),
        ("bake", "loads/cell-2", "cell 2/2"),
        ("gate", "loads/cell-2", "cell 2/2"),
    ]
    # the gate looked at the breaker all through each bake (every 5 s)
    gates = [c.gate for c in run.outcome.cells]
    assert all(g is not None and g.passed and g.samples >= BAKE / 5 for g in gates)
    assert run.breakers.loads >= 2 * BAKE / 5
    # each cell's release is its own item, both promoted to version 8
    for unit in ("loads/cell-1", "loads/cell-2"):
        stored = run.fleet.releases.get(unit)
        assert stored is not None and (stored.phase, stored.stable_version) == ("promoted", "8")
    assert run.fleet.releases.get("loads") is None


def test_a_regression_in_cell_2_rolls_it_back_stops_and_cell_1_keeps_the_version() -> None:
    run = release(
        ["cell-1", "cell-2", "cell-3"], canaries={"loads/cell-2": Behaviour(failure_rate=0.3)}
    )

    assert not run.outcome.promoted
    assert run.outcome.halted_at == "cell-2"
    assert [c.status for c in run.outcome.cells] == ["promoted", "rolled-back", "not-run"]
    cell_1 = run.fleet.releases.get("loads/cell-1")
    cell_2 = run.fleet.releases.get("loads/cell-2")
    assert cell_1 is not None and (cell_1.phase, cell_1.stable_version) == ("promoted", "8")
    assert cell_2 is not None and (cell_2.phase, cell_2.stable_version) == ("rolled-back", "7")
    assert ("retire", "loads/cell-2", "8") in run.host.calls
    # cell-3 never got the version; cell-1 was not touched again
    assert not any(call[1] == "loads/cell-3" for call in run.host.calls)
    assert run.fleet.releases.get("loads/cell-3") is None
    assert run.host.calls.count(("promote", "loads/cell-1", "8")) == 1
    assert "cell-1 keep the new version" in run.outcome.reason
    assert run.events[-1].kind == "halt" and run.events[-1].position == "cell 2/3"


def test_a_failed_health_gate_after_cell_1_reverts_it_and_stops_before_cell_2() -> None:
    run = release(["cell-1", "cell-2"], opens={"loads/cell-1": 30.0})

    assert [c.status for c in run.outcome.cells] == ["reverted", "not-run"]
    gate = run.outcome.cells[0].gate
    assert gate is not None and not gate.passed
    assert "breaker loads/cell-1 open" in gate.reasons[0]
    # failed at the first look after the breaker opened, not at the bake's end
    assert gate.seconds <= 30 + 5
    # cell-1 is back on version 7: live moved back, the gateways told, the gate's reasons kept
    assert run.host.calls[-1] == ("promote", "loads/cell-1", "7")
    stored = run.fleet.releases.get("loads/cell-1")
    assert stored is not None
    assert (stored.phase, stored.weight, stored.stable_version) == ("rolled-back", 0.0, "7")
    assert stored.stable_url == "https://loads-cell-1.live"
    assert stored.evidence[-1]["verdict"] == "health-gate"
    assert stored.evidence[-1]["reverted_to"] == "7"
    # cell-2 was never released
    assert ("start", "loads/cell-2") not in run.host.calls
    assert run.fleet.releases.get("loads/cell-2") is None
    assert [e.kind for e in run.events][-2:] == ["revert", "halt"]


def test_another_cell_s_open_breaker_does_not_fail_this_cell_s_gate() -> None:
    breakers = Breakers()
    breakers.open("loads/cell-2", T0)  # cell-2's trouble is cell-2's
    breakers.open("loads", T0)

    run = release(["cell-1"], breakers=breakers)

    assert run.outcome.promoted


def test_a_cell_that_does_not_serve_the_promoted_version_fails_its_gate() -> None:
    asked: list[tuple[str, str]] = []

    def probe(unit: str, promoted: Release) -> list[str]:
        asked.append((unit, promoted.stable_version))
        return ["loads/cell-1 says it is 7, not 8"]

    run = release(["cell-1", "cell-2"], probe=probe)

    assert asked == [("loads/cell-1", "8")]
    assert [c.status for c in run.outcome.cells] == ["reverted", "not-run"]
    assert run.outcome.cells[0].reason == "health gate: loads/cell-1 says it is 7, not 8"


def test_a_cell_changed_by_someone_else_during_its_bake_is_neither_judged_nor_reverted() -> None:
    fleet = CellsFleet()
    promoted = Release("loads/cell-1", "r1", "8", "8", "https://c", phase="promoted")
    fleet.releases.items["loads/cell-1"] = promoted
    gate = HealthGate(fleet.releases, Breakers(), clock=fleet.clock, sleep=fleet.sleep)

    def replaced() -> None:
        fleet.releases.items["loads/cell-1"] = Release(
            "loads/cell-1", "r2", "8", "9", "https://d", weight=1.0, updated_by="alice"
        )

    fleet.at[fleet.now + 12] = replaced
    result = gate.bake(promoted, BAKE)

    assert not result.passed and result.changed_by == "alice"
    assert "changed during the bake" in result.reasons[0]


def test_a_cell_already_on_the_version_is_done_and_not_baked_again() -> None:
    run = release(["cell-1", "cell-2"])
    host, fleet = run.host, run.fleet
    events: list[CellEvent] = []

    again = release_cells(
        "loads",
        ["cell-1", "cell-2"],
        lambda unit: cell_release(
            lambda: deploy(
                unit,
                Source(Path("/repo"), "abc123"),
                host=_Republished(host),
                store=fleet.releases,
                stats=fleet.stats,
                policy=POLICY,
                check=lambda m, u: KEPT,
                clock=fleet.clock,
                sleep=fleet.sleep,
            )
        ),
        gate=HealthGate(fleet.releases, None, clock=fleet.clock, sleep=fleet.sleep),
        bake_seconds=BAKE,
        revert=lambda *a: pytest.fail("nothing to revert"),
        on_event=events.append,
    )

    assert again.promoted
    assert [c.status for c in again.cells] == ["already", "already"]
    assert [e.kind for e in events] == ["cell", "cell"]


class _Republished(CellHost):
    """A deploy that published no new version (the canary is the live one)."""

    def __init__(self, inner: CellHost) -> None:
        super().__init__()
        self.live = inner.live

    def canary_version(self, module: str) -> str:
        return self.stable_version(module)


# --- reverting on a host that does not keep old versions (the local stack) --------------


class LocalHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def url(self, module: str) -> str:
        return "http://127.0.0.1:1"

    def start(self, module: str, source: Path, version: str) -> str:
        self.calls.append(("start", module, str(source), version))
        return "http://127.0.0.1:2"

    def promote(self, module: str, version: str) -> None:
        self.calls.append(("promote", module, version))

    def retire(self, module: str, version: str) -> None:
        self.calls.append(("retire", module, version))


def test_locally_a_reverted_cell_s_old_version_is_started_again_from_its_source() -> None:
    fleet = CellsFleet()
    promoted = Release(
        "loads/cell-1", "r1", "8", "8", "http://127.0.0.1:3", "http://127.0.0.1:3", phase="promoted"
    )
    fleet.releases.items["loads/cell-1"] = promoted
    host = LocalHost()
    seen_at_promote: list[Release | None] = []

    def promote(module: str, version: str) -> None:
        seen_at_promote.append(fleet.releases.get(module))

    host.promote = promote  # type: ignore[method-assign]

    url = revert_cell(
        promoted,
        "7",
        "http://127.0.0.1:1",
        host=host,
        store=fleet.releases,
        reasons=["breaker open"],
        actor="test",
        source_for=lambda version: Path(f"/versions/{version}"),
        clock=fleet.clock,
        sleep=fleet.sleep,
    )

    assert url == "http://127.0.0.1:2"
    assert host.calls == [("start", "loads/cell-1", "/versions/7", "7")]
    # the gateways were pointed at the restarted process before the promoted one retired
    (before,) = seen_at_promote
    assert before is not None and (before.stable_url, before.stable_version) == (url, "7")
    assert fleet.sleeps == [DRAIN_SECONDS]


def test_a_cell_whose_old_version_cannot_be_started_is_said_and_the_release_stops() -> None:
    fleet = CellsFleet()
    promoted = Release("loads/cell-1", "r1", "8", "8", "http://x", phase="promoted")

    with pytest.raises(ReleaseError, match="relay deploy loads/cell-1 --ref"):
        revert_cell(
            promoted,
            "dir-1234abcd",
            None,
            host=LocalHost(),
            store=fleet.releases,
            reasons=["x"],
            actor="test",
            source_for=lambda version: None,
        )


# --- which cells ------------------------------------------------------------------------


def test_cells_are_ordered_by_number_and_names_are_checked() -> None:
    assert cell_order(["cell-10", "cell-2", "cell-1", "cell-9"]) == [
        "cell-1",
        "cell-2",
        "cell-9",
        "cell-10",
    ]
    with pytest.raises(ReleaseError, match="not a cell name"):
        cell_order(["cell-1", "eu"])


def test_cells_from_the_local_stack_and_a_gateway_s_status() -> None:
    state = {
        "modules": {"loads/cell-1": "u", "loads/cell-2": "v"},
        "cells": {"loads": ["cell-2", "cell-1"]},
    }
    assert cells_from_state(state, "loads") == ["cell-1", "cell-2"]
    assert cells_from_state(state, "message") == []
    assert cells_from_state({"modules": {"loads": "u"}}, "loads") == []
    status = {"cells": {"loads": {"cells": ["cell-1", "cell-2"], "placements": 3}}}
    assert cells_from_status(status, "loads") == ["cell-1", "cell-2"]


class PagedSsm:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.asked: list[dict[str, Any]] = []

    def get_parameters_by_path(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        start = int(kwargs.get("NextToken", 0))
        page = [{"Name": n, "Value": "x"} for n in self.names[start : start + 2]]
        more = start + 2 < len(self.names)
        return {"Parameters": page, **({"NextToken": str(start + 2)} if more else {})}


def test_cells_in_aws_are_the_module_s_ssm_subpaths() -> None:
    celled = PagedSsm(
        [
            "/relay/prod/loads/cell-2/url",
            "/relay/prod/loads/cell-1/url",
            "/relay/prod/loads/cell-1/live-version",
            "/relay/prod/loads/cell-2/canary-url",
            "/relay/prod/loads/placement-table-name",
        ]
    )
    assert cells_from_ssm(celled, "prod", "loads") == ["cell-1", "cell-2"]
    assert celled.asked[0] == {"Path": "/relay/prod/loads/", "Recursive": True}
    assert len(celled.asked) == 3  # every page read
    uncelled = PagedSsm(["/relay/prod/loads/url", "/relay/prod/loads/live-version"])
    assert cells_from_ssm(uncelled, "prod", "loads") == []


# --- AWS: a cell is its own stack --------------------------------------------------------


class Ssm:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get_parameter(self, *, Name: str) -> dict[str, Any]:
        return {"Parameter": {"Name": Name, "Value": self.values[Name]}}


class CloudWatch:
    def __init__(self, alarms: list[str]) -> None:
        self.alarms = alarms
        self.asked: list[dict[str, Any]] = []

    def describe_alarms(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        names = [a for a in self.alarms if a.startswith(kwargs["AlarmNamePrefix"])]
        return {"MetricAlarms": [{"AlarmName": n} for n in names]}


def cell_values() -> dict[str, str]:
    base = "/relay/prod/loads/cell-2/"
    return {
        base + "live-version": "7",
        base + "canary-url": "https://c2.canary",
        base + "canary-version": "8",
    }


def test_a_cell_deploys_its_own_stack_from_the_module_s_template(tmp_path: Path) -> None:
    (tmp_path / "modules/loads").mkdir(parents=True)
    (tmp_path / "modules/loads/template.yaml").write_text("")
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> Any:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0)

    host = AwsAliasHost(
        "prod",
        region="eu-west-1",
        config_env="prod",
        repo=tmp_path,
        ssm=Ssm(cell_values()),
        run=run,
    )

    assert host.start("loads/cell-2", tmp_path, "x") == "https://c2.canary"
    assert host.stack_name("loads/cell-2") == "relay-prod-loads-cell-2"
    build, deploy_command = commands
    assert build[build.index("--template-file") + 1] == "modules/loads/template.yaml"
    assert deploy_command[deploy_command.index("--stack-name") + 1] == "relay-prod-loads-cell-2"
    overrides = deploy_command[deploy_command.index("--parameter-overrides") + 1 :]
    assert overrides == ["Stage=prod", "Cell=cell-2", "LiveVersion=7"]


def test_a_cell_s_health_in_aws_is_its_live_version_and_its_canary_alarms() -> None:
    alarms = CloudWatch(
        [
            "relay-prod-loads-cell-2-LoadsCanaryErrorsAlarm-AB12",
            "relay-prod-loads-cell-2-TableThrottlesAlarm-CD34",  # not a canary alarm
            "relay-prod-loads-cell-1-LoadsCanary5xxAlarm-EF56",  # another cell's
        ]
    )
    host = AwsAliasHost(
        "prod",
        region="eu-west-1",
        config_env="prod",
        repo=Path("/repo"),
        ssm=Ssm(cell_values()),
        cloudwatch=alarms,
    )

    assert host.health_problems("loads/cell-2", "7") == [
        "alarm relay-prod-loads-cell-2-LoadsCanaryErrorsAlarm-AB12 in ALARM"
    ]
    assert alarms.asked[0] == {"AlarmNamePrefix": "relay-prod-loads-cell-2-", "StateValue": "ALARM"}
    assert host.health_problems("loads/cell-2", "8")[0] == (
        "relay-prod-loads-cell-2 live is version 7, not 8"
    )


# --- the display names the cell -----------------------------------------------------------


def test_the_display_names_the_cell_at_every_tick_event_and_in_the_summary() -> None:
    verdict = Verdict(
        "wait",
        ("no regression so far",),
        Numbers(10, 0, 1.0, 20.0),
        Numbers(90, 0, 1.0, 20.0),
        None,
        "same interval",
    )
    tick = Progress(
        "loads/cell-2", "r", 1, (1.0, 10.0, 50.0, 100.0), 10.0, "7", "8", 0, 30, 60, verdict
    )
    assert progress_line(tick).startswith("loads/cell-2 step 2/4 weight 10%")

    event = CellEvent("bake", "loads/cell-2", "cell 2/3", "baking 120 s, then its health gate")
    assert event.line == "loads/cell-2 (cell 2/3): baking 120 s, then its health gate"

    outcome = CelledOutcome(
        "loads",
        [
            CellOutcome("cell-1", "loads/cell-1", "promoted", "promoted after 4 steps"),
            CellOutcome("cell-2", "loads/cell-2", "reverted", "health gate: breaker open"),
            CellOutcome("cell-3", "loads/cell-3", "not-run"),
        ],
    )
    lines = cells_summary(outcome).splitlines()
    assert lines[0].split() == ["cell", "unit", "result", "gate", "reason"]
    assert lines[1].split()[:3] == ["1/3", "loads/cell-1", "promoted"]
    assert lines[2].split()[:3] == ["2/3", "loads/cell-2", "reverted"]
    assert lines[3].split() == ["3/3", "loads/cell-3", "not-run"]
    assert lines[-1] == (
        "loads: NOT PROMOTED: loads/cell-2 reverted: health gate: breaker open; "
        "cell-1 keep the new version; later cells not released"
    )


def test_the_plan_takes_a_cell_bake() -> None:
    plan = parse_plan('[defaults]\ncell_bake_seconds = 45\n[[stage]]\nmodule = "loads"\n')
    assert plan.stages[0].policy.cell_bake_seconds == 45
    assert Policy().cell_bake_seconds == 120


# --- relay release --target aws on a celled stage -------------------------------------------


def test_relay_release_aws_releases_a_celled_module_cell_by_cell_and_stops_at_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from typer.testing import CliRunner

    import relay.cli
    import relay.release.deploy as deploy_module
    from relay.release.controller import Outcome
    from relay.release.deploy import DeployResult

    from .fakes import MemoryReleases

    plan = tmp_path / "plan.toml"
    plan.write_text(
        "[defaults]\nbake_seconds = 0\ncell_bake_seconds = 0\n"
        '[[stage]]\nmodule = "message"\n[[stage]]\nmodule = "loads"\n'
    )
    store = MemoryReleases(lambda: T0)
    breakers = Breakers()
    asked: list[str] = []

    def cells(module: str) -> list[str]:
        asked.append(module)
        return ["cell-2", "cell-1"] if module == "loads" else []

    parts = relay.cli.AwsRelease(
        host=CellHost(),
        store=store,
        stats=object(),  # type: ignore[arg-type]
        check=lambda m, u: KEPT,
        cells=cells,
        breakers=breakers,
    )
    deployed: list[str] = []

    def fake_deploy(unit: str, source: Source, **kwargs: Any) -> DeployResult:
        deployed.append(unit)
        promoted = unit != "loads/cell-2"
        release = Release(unit, f"{unit}-r", "7", "8", "https://c", phase="running")
        stored = store.put(release, expected_revision=None)
        assert stored is not None
        if promoted:
            stored = store.put(
                replace(stored, phase="promoted", stable_version="8"),
                expected_revision=stored.revision,
            )
        outcome = Outcome(unit, release.release_id, promoted, "judged", release=stored)
        return DeployResult(unit, "8", KEPT, outcome, "7", "https://live")

    monkeypatch.setattr(relay.cli, "_aws_parts", lambda stage, config_env, repo: parts)
    monkeypatch.setattr(deploy_module, "deploy", fake_deploy)
    monkeypatch.setattr(relay.cli, "_checkout_version", lambda repo: "abc")

    result = CliRunner().invoke(
        relay.cli.app,
        ["release", str(plan), "--target", "aws", "--stage", "prod", "--config-env", "prod"],
    )

    assert result.exit_code == 1, result.output
    assert asked == ["message", "loads"]
    assert deployed == ["message", "loads/cell-1", "loads/cell-2"]
    assert breakers.loads == 1  # cell-1's gate looked at its breaker
    assert "loads/cell-1 (cell 1/2): health gate passed" in result.output
    assert "loads/cell-2 (cell 2/2): rolled-back" in result.output
    store_1 = store.get("loads/cell-1")
    assert store_1 is not None and store_1.phase == "promoted"


def test_relay_deploy_of_a_celled_module_on_the_local_stack_goes_cell_by_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    import relay.cli
    import relay.release.deploy as deploy_module
    from relay.release.controller import Outcome
    from relay.release.deploy import DeployResult

    from .fakes import MemoryReleases

    key = tmp_path / "identity-key.pem"
    key.write_text("pem")
    state = {
        "control_socket": str(tmp_path / "control.sock"),
        "modules": {"loads/cell-1": "http://127.0.0.1:1", "loads/cell-2": "http://127.0.0.1:2"},
        "cells": {"loads": ["cell-1", "cell-2"]},
        "identity_key_file": str(key),
    }
    store = MemoryReleases(lambda: T0)
    breakers = Breakers()
    deployed: list[str] = []

    def fake_deploy(unit: str, source: Source, **kwargs: Any) -> DeployResult:
        deployed.append(unit)
        release = Release(unit, f"{unit}-r", "7", "8", f"http://{unit}", phase="running")
        stored = store.put(release, expected_revision=None)
        assert stored is not None
        stored = store.put(
            replace(stored, phase="promoted", stable_version="8", stable_url=f"http://{unit}"),
            expected_revision=stored.revision,
        )
        outcome = Outcome(unit, release.release_id, True, "judged", release=stored)
        return DeployResult(unit, "8", KEPT, outcome, "7", "http://old")

    probed: list[str] = []

    def serving(url: str) -> str:
        probed.append(url)
        return "8"

    monkeypatch.setattr(relay.cli, "_release_stores", lambda state: (store, object()))
    monkeypatch.setattr(relay.cli, "_local_breakers", lambda state: breakers)
    monkeypatch.setattr(deploy_module, "deploy", fake_deploy)
    monkeypatch.setattr(deploy_module, "running_version", serving)
    monkeypatch.setattr(deploy_module, "contract_check", lambda pem: lambda m, u: KEPT)
    monkeypatch.setattr(deploy_module, "resolve_source", lambda ref, **kw: Source(Path(ref), "8"))

    code = relay.cli._deploy_one(
        "loads", str(tmp_path), replace(POLICY, cell_bake_seconds=0), state, traffic=False, rate=1
    )

    assert code == 0
    assert deployed == ["loads/cell-1", "loads/cell-2"]
    assert probed == ["http://loads/cell-1", "http://loads/cell-2"]  # each gate asked its cell
    assert breakers.loads == 2


def test_a_breaker_store_that_cannot_be_read_fails_the_gate_only_at_the_end() -> None:
    fleet = CellsFleet()
    promoted = Release("loads/cell-1", "r1", "8", "8", "https://c", phase="promoted")
    fleet.releases.items["loads/cell-1"] = promoted

    class Flaky:
        def __init__(self, fail_from: float) -> None:
            self.fail_from = fail_from

        def load(self) -> dict[str, FleetRecord]:
            if fleet.now >= self.fail_from:
                raise TimeoutError("control table")
            return {}

    def gate(breakers: Flaky) -> HealthGate:
        return HealthGate(
            fleet.releases, breakers, tick_seconds=5, clock=fleet.clock, sleep=fleet.sleep
        )

    start = fleet.now
    down = gate(Flaky(fail_from=start + 50)).bake(promoted, 60)
    assert not down.passed and "could not read loads/cell-1's fleet breaker" in down.reasons[0]
    assert down.seconds >= 60  # a read that fails mid-bake is tried again, not a verdict

    blip = Flaky(fail_from=fleet.now + 10)
    fleet.at[fleet.now + 20] = lambda: setattr(blip, "fail_from", float("inf"))
    assert gate(blip).bake(promoted, 60).passed
