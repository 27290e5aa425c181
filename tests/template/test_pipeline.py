"""The release pipeline (.github/workflows/release.yml and its stage, release-stage.yml):
stages in sequence with bake times, units least critical first, the first failure stops it.

The plan step's script is run here as the workflow runs it (bash, with the workflow's
environment), so the order it ships in is the script's, not a copy of it.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.cloud import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
STAGE_WORKFLOW = "./.github/workflows/release-stage.yml"
STAGES = ["preprod", "prod-us-east-1", "prod-us-west-2"]


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


RELEASE = load("release.yml")
STAGE = load("release-stage.yml")
SAMCONFIG = tomllib.loads((ROOT / "samconfig.toml").read_text())


def stage_jobs() -> dict[str, dict[str, Any]]:
    return {n: j for n, j in RELEASE["jobs"].items() if j.get("uses") == STAGE_WORKFLOW}


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


def run_plan(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (step,) = [s for s in RELEASE["jobs"]["plan"]["steps"] if s.get("id") == "plan"]
    output = tmp_path / "github_output"
    output.write_text("")
    environ = {
        "PATH": os.environ["PATH"],
        "RELEASE_ORDER": RELEASE["env"]["RELEASE_ORDER"],
        "GITHUB_OUTPUT": str(output),
        "BEFORE": "",
        "AFTER": "",
        "REQUESTED": "",
        **env,
    }
    return subprocess.run(
        ["bash", "-c", step["run"]],
        env=environ,
        cwd=env.get("CWD", tmp_path),
        capture_output=True,
        text=True,
    )


def planned(tmp_path: Path, **env: str) -> list[str]:
    result = run_plan(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    (line,) = (tmp_path / "github_output").read_text().splitlines()
    return line.removeprefix("units=").split()


def test_stages_run_one_after_another_each_waiting_for_the_one_before():
    jobs = stage_jobs()
    order, done = [], {"plan", "verify"}
    while len(order) < len(jobs):
        ready = [n for n, j in jobs.items() if n not in done and set(needs(j)) <= done]
        assert len(ready) == 1, f"stages must run one at a time, not {ready}"
        order.append(ready[0])
        done.add(ready[0])
    assert order == STAGES
    for before, after in itertools.pairwise(STAGES):
        assert before in needs(jobs[after]), f"{after} must wait for {before}"
    assert "verify" in needs(jobs["preprod"]), "nothing deploys before the checks pass"


def test_each_stage_bakes_before_the_next_and_production_longest():
    bake = {name: job["with"]["bake-minutes"] for name, job in stage_jobs().items()}
    assert bake["preprod"] >= 15
    assert bake["prod-us-east-1"] >= 30
    assert bake["prod-us-east-1"] >= bake["preprod"], "the first production region bakes longest"
    assert bake["prod-us-west-2"] > 0
    # the stage bakes after its deploys, for the minutes it was given, watching its alarms
    steps = STAGE["jobs"]["deploy"]["steps"]
    names = [s.get("name", "") for s in steps]
    assert names.index("Bake") > names.index("Deploy each unit, least critical first")
    bake_script = steps[names.index("Bake")]["run"]
    assert "BAKE_MINUTES * 60" in bake_script
    assert "--state-value ALARM" in bake_script and "exit 1" in bake_script
    assert "contains(AlarmName, 'Canary')" in bake_script, "the canary alarms judge the bake"
    assert STAGE["jobs"]["deploy"]["env"]["BAKE_MINUTES"] == "${{ inputs.bake-minutes }}"


def test_the_first_failure_stops_the_release():
    every_job = [*RELEASE["jobs"].values(), *STAGE["jobs"].values()]
    for job in every_job:
        assert not job.get("continue-on-error"), job
        assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", str(job.get("if", "")))
        for step in job.get("steps", []):
            assert not step.get("continue-on-error"), step
            assert not re.search(r"always\(\)|failure\(\)|cancelled\(\)", str(step.get("if", "")))
            if "run" in step and "\n" in step["run"]:
                assert step["run"].startswith("set -euo pipefail"), step.get("name")
        assert "strategy" not in job, "no matrix: units and stages never run side by side"
    assert RELEASE["concurrency"] == {"group": "release", "cancel-in-progress": False}
    deploy = next(
        s for s in STAGE["jobs"]["deploy"]["steps"] if s.get("name", "").startswith("Deploy")
    )
    assert "for unit in $UNITS" in deploy["run"], "one unit after another, in the order given"


def test_each_stage_is_a_samconfig_environment_in_its_region():
    for name, job in stage_jobs().items():
        given = job["with"]
        deploy = SAMCONFIG[given["environment"]]["deploy"]["parameters"]
        assert deploy["region"] == given["region"], name
        assert f"Stage={given['stage']}" in deploy["parameter_overrides"], name
        assert deploy["confirm_changeset"] is False, "the pipeline deploys unattended"
        assert SAMCONFIG[given["environment"]]["build"]["parameters"]["build_in_source"] is True
    assert {"dev", *STAGES} <= set(SAMCONFIG)
    regions = {SAMCONFIG[s]["deploy"]["parameters"]["region"] for s in STAGES if "prod" in s}
    assert regions == {"us-east-1", "us-west-2"}


def test_units_ship_least_critical_first():
    order = RELEASE["env"]["RELEASE_ORDER"].split()
    assert order.index("message") < order.index("navigate") < order.index("gatepass")
    assert order.index("gatepass") < order.index("loads") < order.index("gateway")
    assert order.index("notifications") < order.index("message")
    assert order[0] == "platform", "the values every stack reads go first"


def test_a_team_ships_its_modules_in_release_order_whatever_order_it_asks(tmp_path):
    requested = "loads gateway message navigate"
    got = planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED=requested)
    assert got == ["message", "navigate", "loads", "gateway"]
    assert planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="navigate") == ["navigate"]
    everything = planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="all")
    assert everything == RELEASE["env"]["RELEASE_ORDER"].split()


def test_an_unknown_unit_stops_the_plan(tmp_path):
    result = run_plan(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="loads billing")
    assert result.returncode != 0
    assert "unknown unit 'billing'" in result.stdout
    assert (tmp_path / "github_output").read_text() == ""


@pytest.mark.parametrize(
    ("changed", "expected"),
    [
        (["modules/navigate/service.py"], ["navigate"]),
        (["modules/loads/app.py", "modules/message/app.py"], ["message", "loads"]),
        (["gateway/app.py"], ["gateway"]),
        (["docs/deploy.md"], []),
        (
            ["module_kit/http.py"],
            ["notifications", "message", "navigate", "gatepass", "loads", "gateway"],
        ),
    ],
)
def test_a_push_ships_what_it_changed(tmp_path, changed, expected):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("x")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    before = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    for path in changed:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("changed")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "two"], check=True)
    after = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    got = planned(
        tmp_path, EVENT_NAME="push", BEFORE=before.strip(), AFTER=after.strip(), CWD=str(repo)
    )
    assert got == expected
