"""The release pipeline (.github/workflows/release.yml and its stage, release-stage.yml):
stages in sequence with bake times, units least critical first (the HTTP modules in the
order of the release plan, releases/plan.toml), the first failure stops it.

The plan step's and the deploy step's scripts are run here as the workflow runs them (bash,
with the workflow's environment; sam and the release controller replaced by recorders), so
the order they ship in is the scripts', not a copy of it.
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
PLAN_FILE = ROOT / "releases" / "plan.toml"
PLAN = tomllib.loads(PLAN_FILE.read_text())
PLAN_ORDER = [stage["module"] for stage in PLAN["stage"]]
HTTP_MODULES = {"loads", "gatepass", "navigate", "message"}


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
        **{k: v for k, v in RELEASE["env"].items() if k.startswith("RELEASE_")},
        "RELEASE_PLAN": str(PLAN_FILE),
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


def plan_outputs(tmp_path: Path, **env: str) -> dict[str, list[str]]:
    result = run_plan(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "github_output").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition("=") for line in lines)}


def planned(tmp_path: Path, **env: str) -> list[str]:
    return plan_outputs(tmp_path, **env)["units"]


def run_deploy(
    tmp_path: Path, units: str, plan_modules: str, fail: str = "", **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The stage's deploy step, with sam and .venv/bin/relay recording their arguments
    (``fail``: the program that exits 1); ``env``: more of the job's environment (without
    ``LOADS_CELLS`` the step deploys loads uncelled)."""
    (step,) = [
        s for s in STAGE["jobs"]["deploy"]["steps"] if s.get("name", "").startswith("Deploy")
    ]
    log = tmp_path / "calls"
    log.write_text("")
    bin_dir = tmp_path / "bin"
    venv_bin = tmp_path / ".venv" / "bin"
    for directory, name in ((bin_dir, "sam"), (venv_bin, "relay")):
        directory.mkdir(parents=True, exist_ok=True)
        tool = directory / name
        status = 1 if name == fail else 0
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {status}\n')
        tool.chmod(0o755)
    environ = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ENVIRONMENT": "preprod",
        "STAGE": "preprod",
        "UNITS": units,
        "PLAN_MODULES": plan_modules,
        "IDENTITY_PUBLIC_KEY": "key",
        "IDENTITY_SIGNING_KEY_SECRET_ARN": "arn",
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", step["run"]], env=environ, cwd=tmp_path, capture_output=True, text=True
    )
    return result, log.read_text().splitlines()


def shipped(calls: list[str]) -> list[str]:
    """What a deploy step's calls shipped, in order: a stack's unit, or release(<modules>)."""
    out = []
    for call in calls:
        argv = call.split()
        if argv[:2] == ["sam", "deploy"]:
            out.append(argv[argv.index("--stack-name") + 1].removeprefix("relay-preprod-"))
        elif argv[0] == "relay":
            out.append(f"release({call.split('--modules ', 1)[1]})")
    return out


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


def test_units_ship_least_critical_first_the_modules_in_the_plan_s_order(tmp_path):
    order = planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="all")
    assert order == ["platform", "notifications", *PLAN_ORDER, "gateway"]
    assert order.index("message") < order.index("navigate") < order.index("gatepass")
    assert order.index("gatepass") < order.index("loads") < order.index("gateway")
    assert order[0] == "platform", "the values every stack reads go first"
    assert (
        plan_outputs(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="all")["modules"]
        == PLAN_ORDER
    )


def test_the_pipeline_s_module_order_is_read_from_the_plan_file(tmp_path):
    other = tmp_path / "plan.toml"
    other.write_text(
        PLAN_FILE.read_text()
        .replace('module = "message"', 'module = "x"')
        .replace('module = "loads"', 'module = "message"')
        .replace('module = "x"', 'module = "loads"')
    )
    got = planned(
        tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="all", RELEASE_PLAN=str(other)
    )
    assert got == [
        "platform",
        "notifications",
        "loads",
        "navigate",
        "gatepass",
        "message",
        "gateway",
    ]


def test_the_release_plan_stages_every_http_module_once_least_critical_first():
    assert PLAN_ORDER == ["message", "navigate", "gatepass", "loads"]
    assert set(PLAN_ORDER) == HTTP_MODULES
    for module in PLAN_ORDER:
        assert (ROOT / "modules" / module / "template.yaml").is_file()
    assert PLAN["defaults"] == {
        "steps": [1, 10, 50, 100],
        "interval_seconds": 60,
        "min_calls": 50,
        "bake_seconds": 300,
        "max_success_drop": 0.01,
        "max_p99_ratio": 1.5,
        "min_p99_delta_ms": 25,
    }
    steps = PLAN["defaults"]["steps"]
    assert steps == sorted(set(steps)) and steps[-1] == 100, "rising steps that end at all"
    assert set(PLAN) == {"defaults", "stage"}


def test_each_stage_hands_the_plan_s_modules_to_its_deploy():
    for name, job in stage_jobs().items():
        assert job["with"]["plan-modules"] == "${{ needs.plan.outputs.modules }}", name
    assert STAGE["on"]["workflow_call"]["inputs"]["plan-modules"]["required"] is True
    assert STAGE["jobs"]["deploy"]["env"]["PLAN_MODULES"] == "${{ inputs.plan-modules }}"


def test_a_stage_releases_the_plan_s_modules_through_the_controller_between_the_stacks(tmp_path):
    units = "platform notifications message navigate gatepass loads gateway"
    result, calls = run_deploy(tmp_path, units, " ".join(PLAN_ORDER))
    assert result.returncode == 0, result.stderr
    assert shipped(calls) == [
        "platform",
        "notifications",
        "release(message navigate gatepass loads)",
        "gateway",
    ]
    (release,) = [c for c in calls if c.startswith("relay ")]
    assert release.startswith("relay release releases/plan.toml --target aws ")
    assert "--stage preprod" in release and "--config-env preprod" in release
    # the modules' stacks are deployed by the controller alone
    for module in PLAN_ORDER:
        assert not [c for c in calls if f"modules/{module}/" in c or f"-{module} " in c]


def test_a_stage_ships_one_module_alone_through_the_controller(tmp_path):
    result, calls = run_deploy(tmp_path, "navigate", " ".join(PLAN_ORDER))
    assert result.returncode == 0, result.stderr
    assert shipped(calls) == ["release(navigate)"]


def test_a_module_not_promoted_stops_the_stage_before_the_gateway(tmp_path):
    result, calls = run_deploy(tmp_path, "message loads gateway", " ".join(PLAN_ORDER), "relay")
    assert result.returncode != 0
    assert shipped(calls) == ["release(message loads)"], "the gateway is not deployed"


def test_a_failed_stack_deploy_stops_the_stage_before_the_modules(tmp_path):
    result, calls = run_deploy(tmp_path, "platform message", " ".join(PLAN_ORDER), "sam")
    assert result.returncode != 0
    assert not [c for c in calls if c.startswith("relay ")]


def test_a_team_ships_its_modules_in_release_order_whatever_order_it_asks(tmp_path):
    requested = "loads gateway message navigate"
    got = planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED=requested)
    assert got == ["message", "navigate", "loads", "gateway"]
    assert planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="navigate") == ["navigate"]
    everything = planned(tmp_path, EVENT_NAME="workflow_dispatch", REQUESTED="all")
    assert everything == ["platform", "notifications", *PLAN_ORDER, "gateway"]


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
        # the released contracts recorded after a release, and the checker's own pins
        (["contracts/baseline/loads/openapi.json", "tools/optic/package-lock.json"], []),
        (
            ["tools/lambda_artifact.py"],
            ["notifications", "message", "navigate", "gatepass", "loads", "gateway"],
        ),
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


# --- a celled loads (docs/deploy.md, Cells) ----------------------------------------------


def test_a_celled_stage_releases_loads_through_the_controller_and_tells_every_stack(tmp_path):
    env = STAGE["jobs"]["deploy"]["env"]
    assert env["LOADS_CELLS"] == "${{ vars.LOADS_CELLS || '2' }}", "the templates' default"
    units = "platform notifications message navigate gatepass loads gateway"
    result, calls = run_deploy(tmp_path, units, " ".join(PLAN_ORDER), LOADS_CELLS="3")
    assert result.returncode == 0, result.stderr
    # loads goes to the controller with the plan's other modules: it releases the cells
    # one after another (relay/release/cells.py), never a stack deploy of its own here
    assert shipped(calls) == [
        "platform",
        "notifications",
        "release(message navigate gatepass loads)",
        "gateway",
    ]
    assert not [c for c in calls if "loads-cell" in c]
    deploys = [c for c in calls if c.startswith("sam deploy")]
    (gateway,) = [c for c in deploys if "relay-preprod-gateway " in c]
    assert "LoadsCells=3" in gateway


# --- releasing updates the contracts' baseline (docs/contracts.md) --------------------------


def test_the_release_records_the_released_modules_contracts_after_the_last_stage(tmp_path):
    job = RELEASE["jobs"]["record-contracts"]
    last_stage = max(stage_jobs(), key=lambda n: len(needs_closure(n)))
    assert last_stage in needs(job) and job["permissions"] == {"contents": "write"}
    (step,) = [s for s in job["steps"] if s.get("name") == "Record the released contracts"]
    # GIVEN a release of the platform, loads and the gateway, and a recording make and git
    for module in ("loads", "navigate"):
        (tmp_path / "contracts" / "baseline" / module).mkdir(parents=True)
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("make", "git"):  # `git diff --quiet` exits 1: the baseline changed
        tool = bin_dir / name
        status = '[ "$1" = diff ] && exit 1; exit 0'
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{status}\n')
        tool.chmod(0o755)
    # WHEN the step runs
    result = subprocess.run(
        ["bash", "-c", step["run"]],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "UNITS": "platform loads gateway"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # THEN only the released module with a contract is recorded, and the change committed
    calls = log.read_text().splitlines()
    assert result.returncode == 0, result.stderr
    assert calls[0] == "make contracts-release MODULES= loads"
    assert any(c.startswith("git commit") and "contracts/baseline" in c for c in calls)
    assert calls[-1] == "git push origin HEAD:main"


def needs_closure(name: str) -> set[str]:
    """Every job ``name`` waits for, directly or not."""
    found: set[str] = set()
    todo = needs(RELEASE["jobs"][name])
    while todo:
        job = todo.pop()
        if job not in found:
            found.add(job)
            todo.extend(needs(RELEASE["jobs"][job]))
    return found
