"""The plan file: parsing (defaults merged into stages, errors that name the key) and
run_plan (stages in order, bake time between them, halt at the first failure)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from relay.release.controller import Outcome
from relay.release.plan import PlanError, PlanEvent, Stage, load_plan, parse_plan, run_plan
from relay.release.policy import Policy

from .fakes import T0

PLAN = """
[defaults]
steps = [1, 10, 50, 100]
interval_seconds = 60
min_calls = 50
bake_seconds = 300
max_success_drop = 0.01
max_p99_ratio = 1.5
min_p99_delta_ms = 25
[[stage]]
module = "message"
[[stage]]
module = "navigate"
[[stage]]
module = "gatepass"
[[stage]]
module = "loads"
"""
MODULES = ("loads", "gatepass", "navigate", "message")


def test_the_plan_lists_stages_in_order_with_the_defaults() -> None:
    plan = parse_plan(PLAN, modules=MODULES)

    assert plan.modules == ["message", "navigate", "gatepass", "loads"]
    assert all(stage.policy == Policy(bake_seconds=300) for stage in plan.stages)


def test_a_stage_overrides_only_what_it_names() -> None:
    text = PLAN.replace('module = "navigate"', 'module = "navigate"\ninterval_seconds = 120')

    plan = parse_plan(text)

    navigate = plan.stages[1].policy
    assert navigate.interval_seconds == 120
    assert navigate.tick_seconds == 12  # derived from the stage's own interval
    assert navigate.bake_seconds == 300
    assert plan.stages[0].policy.interval_seconds == 60


def test_no_defaults_means_the_policy_defaults() -> None:
    plan = parse_plan('[[stage]]\nmodule = "message"\n')

    assert plan.stages == [Stage("message", Policy())]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PLAN.replace("min_calls", "min_call"), "[defaults]: unknown key 'min_call'"),
        (PLAN.replace('module = "loads"', 'module = "loads"\nbake = 1'), "stage 4 (loads)"),
        (PLAN.replace('module = "loads"', 'module = "loads"\nbake = 1'), "unknown key 'bake'"),
        (PLAN.replace("min_calls = 50", 'min_calls = "50"'), "min_calls must be an integer"),
        (PLAN.replace("min_calls = 50", "min_calls = 5.5"), "min_calls must be an integer"),
        (PLAN.replace("bake_seconds = 300", "bake_seconds = true"), "bake_seconds must be"),
        (PLAN.replace("[1, 10, 50, 100]", "[1, 10, 50]"), "the last step must be 100"),
        (PLAN.replace("[1, 10, 50, 100]", "[10, 1, 100]"), "steps must increase"),
        (PLAN.replace("[1, 10, 50, 100]", '"1,10"'), "steps must be a list of numbers"),
        (PLAN.replace('module = "loads"', 'module = "lods"'), "'lods' is not one of"),
        (PLAN.replace('module = "loads"', 'module = "message"'), "already in an earlier stage"),
        (PLAN.replace('module = "loads"', "module = 3"), "stage 4: module must be"),
        ("[defaults]\nmin_calls = 50\n", "the plan has no [[stage]]"),
        ("[[stages]]\nmodule = 'loads'\n", "unknown key 'stages'"),
        ("[[stage]\n", "not valid TOML"),
        (
            PLAN.replace('module = "gatepass"', 'module = "gatepass"\ninterval_seconds = 0'),
            "stage 3 (gatepass): interval_seconds must be >= 1",
        ),
    ],
)
def test_a_bad_plan_is_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(text, modules=MODULES)

    assert message in str(caught.value)


def test_load_plan_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text("[[stage]]\nmodule = 'message'\nsteps = [100, 50]\n")

    with pytest.raises(PlanError, match=r"plan\.toml: stage 1 \(message\): steps must"):
        load_plan(path)
    with pytest.raises(PlanError, match="cannot read the plan"):
        load_plan(tmp_path / "missing.toml")


class Recorder:
    """A release_stage that promotes every module except the ones named bad, and a clock
    and sleep in simulated time."""

    def __init__(self, bad: set[str]) -> None:
        self.bad = bad
        self.now = T0
        self.released: list[tuple[str, float]] = []
        self.sleeps: list[float] = []
        self.events: list[PlanEvent] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def release(self, stage: Stage) -> Outcome:
        self.released.append((stage.module, self.now))
        self.now += 240  # a release takes four simulated minutes
        promoted = stage.module not in self.bad
        reason = "promoted after 4 steps" if promoted else "p99 612 ms vs stable 190 ms"
        return Outcome(stage.module, f"r-{stage.module}", promoted, reason)


def test_run_plan_halts_at_the_first_failed_stage_and_leaves_earlier_ones() -> None:
    plan = parse_plan(PLAN)
    run = Recorder(bad={"gatepass"})

    outcome = run_plan(
        plan, run.release, clock=run.clock, sleep=run.sleep, on_event=run.events.append
    )

    assert [m for m, _ in run.released] == ["message", "navigate", "gatepass"]
    assert [(s.module, s.status) for s in outcome.stages] == [
        ("message", "promoted"),
        ("navigate", "promoted"),
        ("gatepass", "rolled-back"),
        ("loads", "not-run"),
    ]
    assert not outcome.promoted
    assert outcome.halted_at == "gatepass"
    assert run.events[-1].kind == "halt"
    assert "p99 612 ms" in run.events[-1].message


def test_run_plan_bakes_between_stages_but_not_after_the_last() -> None:
    plan = parse_plan(PLAN.replace('module = "navigate"', 'module = "navigate"\nbake_seconds = 30'))
    run = Recorder(bad=set())

    outcome = run_plan(plan, run.release, clock=run.clock, sleep=run.sleep)

    assert outcome.promoted
    assert run.sleeps == [300, 30, 300]  # after message, navigate, gatepass; not after loads
    starts = [t for _, t in run.released]
    assert [b - a for a, b in itertools.pairwise(starts)] == [540, 270, 540]


def test_run_plan_does_not_bake_after_a_failure() -> None:
    run = Recorder(bad={"message"})

    outcome = run_plan(parse_plan(PLAN), run.release, clock=run.clock, sleep=run.sleep)

    assert run.sleeps == []
    assert [s.status for s in outcome.stages] == ["rolled-back"] + ["not-run"] * 3


def test_a_bake_that_wakes_early_sleeps_the_rest() -> None:
    run = Recorder(bad=set())
    woke_early: list[float] = []

    def short_sleep(seconds: float) -> None:
        woke_early.append(seconds)
        run.now += min(seconds, 100)

    plan = parse_plan(
        '[defaults]\nbake_seconds = 250\n[[stage]]\nmodule = "a"\n[[stage]]\nmodule = "b"\n'
    )
    run_plan(plan, run.release, clock=run.clock, sleep=short_sleep)

    assert woke_early == [250, 150, 50]


def test_command_line_settings_are_read_as_toml_and_checked_like_a_plans() -> None:
    from relay.release.plan import settings_from_pairs

    assert settings_from_pairs(["steps=[10, 100]", "min_p99_delta_ms = 60", "min_calls=5"]) == {
        "steps": (10.0, 100.0),
        "min_p99_delta_ms": 60.0,
        "min_calls": 5,
    }
    with pytest.raises(PlanError, match="expected name=value"):
        settings_from_pairs(["interval_seconds"])
    with pytest.raises(PlanError, match="min_calls must be an integer"):
        settings_from_pairs(["min_calls=1.5"])
    with pytest.raises(PlanError, match="unknown"):
        settings_from_pairs(["no_such_setting=1"])
