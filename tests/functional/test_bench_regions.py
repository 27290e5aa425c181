"""The benchmark's regions phase (bench/region_cost.py): what it makes of the drivers'
answers around an evacuation, and what the report says from its figures (made-up numbers,
no timing, no stack)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench import region_cost, verdicts
from bench.region_cost import EAST, WEST, Answer, moved_after, summary
from bench.run import Report, markdown


def answers(host: str, regions: str, start: float = 0.0, status: int = 200) -> list[Answer]:
    """One answer a second from ``start`` on ``host``'s hostname, each from the region of
    the next letter of ``regions`` (e: us-east-1, w: us-west-2, -: no answer)."""
    names = {"e": EAST, "w": WEST, "-": ""}
    return [
        Answer(host, "read", start + n, start + n + 0.02, 0 if c == "-" else status, names[c])
        for n, c in enumerate(regions)
    ]


def test_the_move_is_timed_to_the_first_request_from_which_every_answer_came_from_the_peer():
    # the command at t=10; east answers until 12, then a stray east at 13, west from 14 on
    got = answers(EAST, "eeeeeeeeeeeeeewwwwww")
    got[13] = Answer(EAST, "read", 13, 13.02, 200, EAST)
    assert moved_after(got, EAST, WEST, since=10.0) == 4.0
    # a request with no answer tells no region: it does not end the move (it failed)
    gap = answers(EAST, "eeeeeeeeeeeww-wwww")
    assert moved_after(gap, EAST, WEST, since=10.0) == 1.0
    # the last answer still from us-east-1: not moved
    assert moved_after(answers(EAST, "eeeeeeeeeeeewwe"), EAST, WEST, since=10.0) is None
    # answers before the command, and on the other hostname, do not count
    assert moved_after(answers(WEST, "wwwww"), EAST, WEST, since=0.0) is None
    assert moved_after(answers(EAST, "wwwwe"), EAST, WEST, since=0.0, until=4.0) == 0.0


def test_an_evacuation_s_summary_counts_failed_requests_per_window():
    east = answers(EAST, "eeeee" + "e-www" + "wwwww" + "wweee" + "eeeee")
    west = answers(WEST, "w" * 25, start=0.5)
    east.append(Answer(EAST, "write", 11.2, 11.3, 503, WEST))
    e = summary(
        east + west,
        started=0.0,
        evacuated=5.0,
        restored=15.0,
        ended=25.0,
        commands={"evacuate": 0.8, "restore": 0.7},
        lever="relay region evacuate",
    )
    assert e["shift_seconds"] == 2.0 and e["back_seconds"] == 2.0
    assert e["before"]["requests"] == 10 and e["before"]["failed"] == 0
    assert e["evacuating"]["failed"] == 2  # one with no answer, one 503
    assert e["evacuating"]["statuses"] == {"200": 19, "no answer": 1, "503": 1}
    assert e["evacuating"]["by_region"][EAST] == {EAST: 1, WEST: 9}
    assert e["restoring"]["failed"] == 0 and e["west_host_elsewhere"] == 0
    assert e["requests"] == 51 and e["failed"] == 2


EVACUATION: dict[str, Any] = {
    "shift_seconds": 1.42,
    "back_seconds": 1.1,
    "lever": "relay region evacuate",
    "command_seconds": {"evacuate": 1.05, "restore": 0.98},
    "requests": 420,
    "failed": 0,
    "west_host_elsewhere": 0,
    "before": {
        "requests": 100,
        "failed": 0,
        "degraded": 0,
        "statuses": {"200": 50, "201": 50},
        "p50_ms": 12.0,
        "p99_ms": 40.0,
        "by_region": {EAST: {EAST: 50}, WEST: {WEST: 50}},
    },
    "evacuating": {
        "requests": 160,
        "failed": 0,
        "degraded": 0,
        "statuses": {"200": 80, "201": 80},
        "p50_ms": 14.0,
        "p99_ms": 60.0,
        "by_region": {EAST: {EAST: 12, WEST: 68}, WEST: {WEST: 80}},
    },
    "restoring": {
        "requests": 160,
        "failed": 0,
        "degraded": 0,
        "statuses": {"200": 80, "201": 80},
        "p50_ms": 13.0,
        "p99_ms": 55.0,
        "by_region": {EAST: {EAST: 70, WEST: 10}, WEST: {WEST: 80}},
    },
    "seconds": {"before": 5.0, "evacuated": 6.5, "restored": 6.2},
    "drivers": 40,
    "rate": 20.0,
    "budget": 600,
    "exhausted": False,
    "client_timeout_seconds": 10.0,
    "steady_seconds": 5.0,
    "replicator": {
        "applied": 900,
        "superseded": 0,
        "echoes": 900,
        "repaired": 0,
        "errors": 0,
        "lag_ms": {"p50": 180.0, "p99": 420.0, "max": 510.0, "count": 900},
    },
    "end_to_end": {
        "table": "relay-dev-FallbackStore",
        "lag_ms": {"p50": 210.0, "p99": 480.0, "max": 490.0, "count": 50},
        "missing": 0,
        "probes": 50,
        "poll_ms": 10.0,
    },
    "switches": [
        {
            "serving": [WEST],
            "changed_at": 100.0,
            "seen_at": 100.15,
            "reloaded_at": 100.3,
            "ok": True,
        },
        {  # a stale read of the controls: the evacuate write again, after the restore
            "serving": [WEST],
            "changed_at": 100.0,
            "seen_at": 109.0,
            "reloaded_at": 109.2,
            "ok": True,
        },
    ],
    "commanded_at": {"evacuate": 99.5, "restore": 107.0},
    "load_average": {"before": [1.0, 1.0, 1.0], "after": [1.5, 1.1, 1.0]},
    "stack_seconds": 30.0,
    "all_seconds": 80.0,
}


def _report(two: list[float] | None = None, evacuation: dict | None = None) -> dict:
    r = Report("2026-12-04 12:30 UTC", 10, 3, 2, {}, {}, command="python -m bench.run")
    r.regions = {
        "instructions": {
            "one-region": [557_600.0, 557_700.0, 557_500.0],
            "two-regions": two or [563_000.0, 563_100.0, 562_900.0],
            "one-region-write": [630_000.0, 630_000.0, 630_000.0],
            "two-regions-write": [636_000.0, 636_000.0, 636_000.0],
        },
        "requests": [200, 1200],
        "drivers": 20,
        "tree": "fd44c2b",
        "commands": ["PYTHONHASHSEED=0 valgrind --tool=callgrind ... --forward two-regions"],
    }
    if evacuation is not None:
        r.regions["evacuation"] = evacuation
    region_cost.targets(r)
    return asdict(r)


def test_regions_section_shows_the_counts_the_ratio_the_move_and_the_lag():
    figures = _report(evacuation=dict(EVACUATION))
    _, _, moved, failed = figures["targets"]
    assert {t["phase"] for t in figures["targets"]} == {"regions"}
    assert {t["verdict"] for t in figures["targets"]} == {verdicts.MET}
    assert moved["measured"] == "1.42 s; back after the restore 1.10 s"
    assert failed["measured"] == "0 of 320"
    text = "\n".join(region_cost.markdown(Report.from_dict(figures)))
    assert "## Regions (run of 2026-12-04 12:30 UTC; 3 rounds)" in text
    assert f"| GET /loads, {region_cost.ONE} | 557,600 (557,500-557,700, 3 rounds) |" in text
    assert "| GET /loads: two regions / one, round by round | 1.010x" in text
    assert "| POST /loads/L-1/events: two regions / one, round by round | 1.010x" in text
    assert "us-east-1 hostname's answers from us-west-2 | 1.42 s | <= 60 s" in text
    assert "| requests failed from the evacuate command to the restore command | 0 of 160 |" in text
    assert (
        "serving us-west-2: seen 0.65 s and nginx reloaded 0.80 s after the evacuate "
        "command's start; the routing write it acted on +0.50 s; serving us-west-2: seen "
        "2.00 s and nginx reloaded 2.20 s after the restore command's start; the routing "
        "write it acted on -7.00 s"
    ) in text
    assert (
        "| replicator (record created to copy written) | 180 ms | 420 ms | 510 ms | 900 |" in text
    )
    assert "| end to end (written in us-east-1 to read in us-west-2) | 210 ms | 480 ms" in text
    assert "- [met] us-east-1 evacuated on the two-region local stack" in text
    assert "- [met] us-east-1 evacuated and restored on the two-region local stack" in text
    assert "How to read it: the time to move is mostly the command's own" in text
    assert "409 invalid-transition" not in text
    # the whole report: the target's line, and the section after the cells'
    whole = markdown(None, None, None, None, None, figures)
    assert "- *Regions*: with a second region configured" in whole
    assert "## Regions (run of" in whole


def test_a_second_region_costing_more_than_5_percent_or_a_failed_request_misses():
    figures = _report(two=[600_000.0, 600_100.0, 599_900.0])
    hop, write = figures["targets"]
    assert hop["verdict"] == verdicts.MISSED and write["verdict"] == verdicts.MET
    text = "\n".join(region_cost.markdown(Report.from_dict(figures)))
    assert "(evacuation on the local stack: not run)" in text
    what = "409 invalid-transition (write on the us-east-1 hostname)"
    evacuating = {**EVACUATION["evacuating"], "failed": 1, "problems": {what: 1}}
    figures = _report(evacuation={**EVACUATION, "evacuating": evacuating})
    _, _, moved, failed = figures["targets"]
    assert moved["verdict"] == verdicts.MET and failed["verdict"] == verdicts.MISSED
    assert failed["measured"] == f"1 of 320 (1 x {what})"
    text = "\n".join(region_cost.markdown(Report.from_dict(figures)))
    assert "acknowledged by the other region before the move, about 4 s earlier" in text
    assert "The replicator's slowest copy in this run took 0.5 s" in text
    never = {**EVACUATION, "shift_seconds": None}
    _, _, moved, _ = _report(evacuation=never)["targets"]
    assert moved["verdict"] == verdicts.MISSED and moved["measured"].startswith("not moved")
    skipped = _report(evacuation={"skipped": "this tree's LocalStack has no regions"})
    assert len(skipped["targets"]) == 2
    assert "LocalStack has no regions" in "\n".join(region_cost.markdown(Report.from_dict(skipped)))


def test_region_cost_forwards_in_process_with_and_without_a_peer_region(monkeypatch):
    import asyncio

    import bench.callgrind_forward

    monkeypatch.setattr(bench.callgrind_forward, "callgrind", lambda switch: None)
    for mode in region_cost.MODES:  # each exits on any answer but 200, or one sent away
        asyncio.run(region_cost._forwards(mode, 5))
