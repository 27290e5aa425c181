"""The progress display and the summary table: readable plain text, no escape codes
unless on a terminal."""

from __future__ import annotations

import io

from gateway.release.state import Release
from gateway.release.stats import VersionStats, bucket
from relay.release.analysis import judge
from relay.release.controller import Judgement, Outcome, Progress
from relay.release.display import ProgressDisplay, plan_summary, progress_line, summary_table
from relay.release.plan import PlanOutcome, StageOutcome
from relay.release.policy import Policy

from .fakes import T0

STEPS = (1.0, 10.0, 50.0, 100.0)


def stats(calls: int, failures: int = 0, ms: float = 20.0) -> VersionStats:
    return VersionStats(calls, failures, {bucket(ms): calls})


def progress(step: int = 1, failures: int = 30) -> Progress:
    verdict = judge(stats(100, failures), stats(900), Policy(), final=False)
    return Progress(
        "message", "r-42", step, STEPS, STEPS[step], "v1", "v2", T0, T0 + 12, 60, verdict
    )


def test_a_progress_line_has_step_weight_both_versions_and_the_verdict() -> None:
    line = progress_line(progress())

    assert line.startswith("message step 2/4 weight 10% [12/60 s]")
    assert "stable v1: 900 calls, 100.0% ok, p99 " in line
    assert "canary v2: 100 calls, 70.0% ok, p99 " in line
    assert line.endswith(
        "fail: success 70.0% vs stable 100.0% (drop 30.0 points > 1.0); "
        "success 70.0% below the floor 95.0%"
    )


def test_off_a_terminal_the_display_writes_plain_lines() -> None:
    out = io.StringIO()

    with ProgressDisplay(out) as show:
        show(progress(0, failures=0))
        show(progress(1))

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "\x1b" not in out.getvalue()
    assert lines[1] == progress_line(progress(1))


def test_on_a_terminal_the_display_is_a_live_table() -> None:
    out = io.StringIO()

    with ProgressDisplay(out, live=True) as show:
        show(progress(0, failures=0))
        show(progress(1))

    text = out.getvalue()
    assert "message: v1 -> v2" in text
    assert "2/4" in text
    assert "10%" in text
    assert "fail:" in text


def test_the_summary_table_shows_every_judged_step_and_the_outcome() -> None:
    policy = Policy()
    passed = judge(stats(100), stats(900), policy)
    at_100 = judge(stats(1000, failures=300), VersionStats(), policy, earlier_stable=stats(500))
    release = Release("message", "r-42", "v1", "v2", "http://127.0.0.1:9104", steps=STEPS)
    outcome = Outcome(
        "message",
        "r-42",
        False,
        "; ".join(at_100.reasons),
        (Judgement(0, 1.0, T0, T0 + 60, passed), Judgement(3, 100.0, T0, T0 + 8, at_100)),
        release,
    )

    table = summary_table(outcome).splitlines()

    assert table[0].split() == [
        "step", "weight", "window", "stable", "calls", "stable", "ok", "stable", "p99",
        "canary", "calls", "canary", "ok", "canary", "p99", "verdict",
    ]  # fmt: skip
    assert table[1].split()[:5] == ["1/4", "1%", "60", "s", "900"]
    assert "pass: success 100.0% vs stable 100.0%" in table[1]
    assert table[2].split()[:5] == ["4/4", "100%", "8", "s", "500*"]
    assert table[2].split()[8:10] == ["1000", "70.0%"]
    assert table[3].startswith("* stable's last window with enough calls")
    assert table[4].startswith("message r-42: NOT PROMOTED: success 70.0% vs stable 100.0%")
    assert "\x1b" not in "\n".join(table)


def test_a_release_stopped_before_any_verdict_still_says_why() -> None:
    outcome = Outcome("message", "r-42", False, "changed by ops-alice (rolled-back, weight 0%)")

    assert summary_table(outcome).splitlines() == [
        "(no step was judged)",
        "message r-42: NOT PROMOTED: changed by ops-alice (rolled-back, weight 0%)",
    ]


def test_the_plan_summary_has_one_line_per_stage() -> None:
    outcome = PlanOutcome(
        [
            StageOutcome("message", "promoted", Outcome("message", "r", True, "promoted")),
            StageOutcome("navigate", "rolled-back", Outcome("navigate", "r", False, "p99")),
            StageOutcome("loads", "not-run"),
        ]
    )

    lines = plan_summary(outcome).splitlines()

    assert [line.split()[:3] for line in lines[1:]] == [
        ["1", "message", "promoted"],
        ["2", "navigate", "rolled-back"],
        ["3", "loads", "not-run"],
    ]
