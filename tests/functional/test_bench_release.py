"""The benchmark's release phase: what the report says from its figures (made-up numbers,
no timing), and how a run of the release phase alone leaves the other sections."""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

from bench import verdicts
from bench.run import (
    NO_RELEASE,
    RELEASE_AT_50,
    Report,
    drivers_answered,
    drivers_text,
    markdown,
    release_markdown,
    release_targets,
)

ZERO: dict[str, Any] = {
    "promoted": False,
    "reason": "regression: canary success 65.2% against stable 100.0%",
    "interval_seconds": 10,
    "steps": [10.0, 50.0, 100.0],
    "min_calls": 20,
    "rate": 100.0,
    "drivers": 200,
    "seconds_to_zero": 3.68,
    "canary_calls": 23,
    "canary_failures": 8,
    "driver_answers": {"200": 873},
}


def report(
    release: list[float] | None = None, zero: dict[str, Any] | None = None, **extra: Any
) -> Report:
    r = Report("2026-12-04 04:00 UTC", 10, 3, 2, {}, {}, **extra)
    r.release = {
        "instructions": {
            "no-release": [558_513.0, 558_600.0, 558_400.0],
            "release": release or [576_592.0, 576_700.0, 576_500.0],
        },
        "requests": [200, 1200],
        "drivers": 20,
        "tree": "8d74cda + uncommitted changes",
        "commands": ["PYTHONHASHSEED=0 valgrind --tool=callgrind ... --forward release"],
    }
    if zero is not None:
        r.release["time_to_zero"] = zero
    release_targets(r)
    return r


def test_release_section_shows_both_counts_their_ratio_and_the_verdict():
    r = report(zero=copy.deepcopy(ZERO), command="python -m bench.run --phases release")
    text = "\n".join(release_markdown(r))
    assert "## A release in progress (run of 2026-12-04 04:00 UTC; 3 rounds)" in text
    assert "`python -m bench.run --phases release`" in text
    assert "Tree measured: 8d74cda + uncommitted changes." in text
    assert f"| {NO_RELEASE} | 558,513 (558,400-558,600, 3 rounds) |" in text
    assert f"| {RELEASE_AT_50} | 576,592 (576,500-576,700, 3 rounds) |" in text
    assert "| release / no release, round by round | 1.032x" in text
    assert "- [met] instructions per in-process forward with a release of loads at 50%" in text
    assert "(target <= 1.05x; reference 558,513 (558,400-558,600, 3 rounds))" in text
    assert "PYTHONHASHSEED=0 valgrind --tool=callgrind" in text
    # the bad canary's time to 0%, against the interval
    assert "| from the first failed call to 0% | 3.68 s |" in text
    assert "| the analysis interval (the goal) | 10 s |" in text
    assert "| canary calls, the whole release | 23 |" in text
    assert "| canary calls that failed | 8 (35%) |" in text
    assert "| what the synthetic drivers got | 873 x 200 |" in text
    assert "Outcome: rolled back (regression: canary success 65.2%" in text
    assert "- [met] a canary failing 30% of its calls" in text
    assert "steps 10%, 50%, 100%, an analysis interval of 10 s" in text
    assert "`LambdaCanary10Percent5Minutes`" in text


def test_a_release_costing_more_than_5_percent_misses():
    r = report(release=[590_000.0, 590_100.0, 589_900.0])
    (hop,) = r.targets
    assert hop["phase"] == "release" and hop["verdict"] == verdicts.MISSED
    assert "(time to 0%: not run)" in "\n".join(release_markdown(r))


def test_time_to_zero_misses_past_the_interval_or_when_a_driver_was_not_answered():
    late = report(zero={**ZERO, "seconds_to_zero": 11.2})
    assert late.targets[1]["verdict"] == verdicts.MISSED
    promoted = report(zero={**ZERO, "promoted": True})
    assert promoted.targets[1]["verdict"] == verdicts.MISSED
    unanswered = {**ZERO, "driver_answers": {"200": 860, "502": 3, "error": 1, "404": 2}}
    assert report(zero=unanswered).targets[1]["verdict"] == verdicts.MISSED
    assert drivers_text(unanswered) == "860 x 200, 3 x 502, 2 x 404, 1 x error"
    assert drivers_answered({**ZERO, "driver_answers": {"200": 5, "404": 1}})
    assert not drivers_answered({**ZERO, "driver_answers": {}})


def test_no_release_section_without_its_figures():
    assert release_markdown(None) == []
    assert release_markdown(Report("2026-12-04 04:00 UTC", 10, 3, 2, {}, {})) == []


def test_a_release_only_run_replaces_its_section_and_leaves_the_main_one():
    full = report(zero=copy.deepcopy(ZERO))
    full.machine = {"cpu": "x86", "cores": "2", "os": "Linux", "kernel": "6", "python": "3.11"}
    later = asdict(report(zero={**ZERO, "seconds_to_zero": 2.5}))
    later["started"] = "2026-12-04 04:30 UTC"
    text = markdown(full, None, None, later)
    main, section = text.split("## A release in progress")
    assert "| a canary failing 30% of its calls, on the local stack" not in main
    assert "| instructions per in-process forward" not in main
    assert "The release phase's targets are judged in sections 8 and 9, from a later run" in main
    assert "(run of 2026-12-04 04:30 UTC; 3 rounds)" in section
    assert "| from the first failed call to 0% | 2.50 s |" in section
    same = markdown(full, None, None, asdict(full)).split("## A release in progress")[0]
    assert "| a canary failing 30% of its calls, on the local stack" in same
    assert "later run" not in same
