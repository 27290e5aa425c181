"""The benchmark's fleet and Lambda-mode phases: what the report says from their figures,
and the Lambda-mode driver's events reaching the gateway through its Mangum entry."""

from __future__ import annotations

from dataclasses import asdict

from bench import inprocess
from bench.run import (
    FLEET_FALLBACK,
    FLEET_HEALTHY,
    FLEET_STORE,
    LAMBDA_MODE,
    ONE_PROCESS,
    Measurement,
    Report,
    fleet_markdown,
    fleet_targets,
    markdown,
    with_earlier_lambda,
    without_note,
)


def report(healthy_p99: float) -> Report:
    r = Report("2026-12-03 18:00 UTC", 2, 2, 1, {}, {}, quick=True)
    for round_ in (1, 2):
        for name, p99 in ((FLEET_HEALTHY, healthy_p99), (FLEET_FALLBACK, 4.0), (FLEET_STORE, 6.0)):
            r.measurements.append(
                Measurement("fleet", name, round_, 400.0, 2.0, p99, 800, 1.0, "wrk ...")
            )
        r.fleet.append(
            {
                "round": round_,
                "requests": 900,
                "full_waits": 44 + round_,
                "first_open_s": 6.5,
                "fleet_fast_s": 8.0,
                "spread_s": 1.5,
            }
        )
    r.lambda_cpu = {ONE_PROCESS: [100.0, 120.0], LAMBDA_MODE: [300.0, 300.0]}
    r.lambda_requests = 1000
    return r


def test_fleet_section_shows_each_round_and_says_it_was_a_quick_run():
    text = "\n".join(fleet_markdown(report(healthy_p99=3.0)))
    assert "`--quick`: 2 rounds of 2 s, a smoke check" in text
    assert "| 1 | 900 | 45 | 6.5 s | 8.0 s | 1.5 s |" in text
    assert "| 2 | 900 | 46 | 6.5 s | 8.0 s | 1.5 s |" in text
    assert "Full-deadline waits: 46 (median). Breakers deciding alone would let at least 40" in text
    # the in-flight floor for the phase's 2 drivers: 2 x ceil(5 / 2) + 1
    assert "2 x ceil(fail_max / 2) + 1 = 7 would wait" in text
    assert "Host noise" not in text
    # the fallback store's run: explained, and its own row of the table
    assert "answered from the fallback store" in text
    assert f"| {FLEET_STORE} | 2 | 400 (400-400) | 2.00 | 6.00 (6.00-6.00) | 100.00% |" in text
    # Lambda mode next to the one-process figure, the ratio taken round by round
    assert "| Lambda / one process, round by round | 2.750x (2.500-3.000, 2 rounds) |" in text


def test_fleet_section_warns_when_the_host_missed_the_target_healthy():
    text = "\n".join(fleet_markdown(report(healthy_p99=12.5)))
    assert "Host noise: the healthy fleet's own p99 (the reference, 12.50 ms)" in text


def test_no_fleet_section_without_its_figures():
    assert fleet_markdown(None) == []


def test_lambda_mode_forwards_http_api_events_on_a_named_stage_through_mangum():
    rounds = inprocess.run_lambda(requests=20, rounds=2)  # asserts every answer is a 200
    assert len(rounds) == 2 and all(us > 0 for us in rounds)
    event = inprocess.http_api_event("t", 3)
    assert event["rawPath"] == "/prod/loads" and event["requestContext"]["stage"] == "prod"


def test_fleet_section_says_when_the_store_run_fell_behind_its_rate():
    r = report(healthy_p99=3.0)
    r.fleet_rate = 400
    assert "Fallback store:" not in "\n".join(fleet_markdown(r))
    r.fleet_rate = 800  # the store's run achieved 400 RPS of the 800 offered...
    # ...and so did the healthy fleet: the host fell behind, not the store
    assert "Fallback store:" not in "\n".join(fleet_markdown(r))
    for m in r.runs("fleet", FLEET_HEALTHY):
        m.rps = 790.0
    text = "\n".join(fleet_markdown(r))
    assert "Fallback store: its paced run achieved 400 RPS of the ~800 offered" in text


def test_fleet_section_shows_the_store_read_without_the_cache():
    r = report(healthy_p99=3.0)
    assert "The store read without the cache" not in "\n".join(fleet_markdown(r))
    r.store_reads = {"p50_ms": 4.25, "p99_ms": 9.5, "reads": 200.0, "rps": 180.0, "readers": 8.0}
    text = "\n".join(fleet_markdown(r))
    assert "one at a time, 200 reads, p50 4.25 ms, p99 9.50 ms" in text
    assert "8 concurrent readers of distinct keys, 180 reads per second in all" in text
    assert "keeps a driver's loads read from the store 1 s" in text


def test_a_fleet_only_run_keeps_the_earlier_lambda_figures_and_says_from_when():
    earlier = asdict(report(healthy_p99=3.0))
    fleet_only = asdict(report(healthy_p99=3.0))
    fleet_only.update(started="2026-12-04 03:30 UTC", lambda_cpu={}, lambda_requests=0)
    merged = with_earlier_lambda(fleet_only, earlier)
    assert merged["lambda_cpu"] == earlier["lambda_cpu"] and merged["lambda_requests"] == 1000
    text = "\n".join(fleet_markdown(Report.from_dict(merged)))
    assert "From the run of 2026-12-03 18:00 UTC (this run measured the fleet only)." in text
    assert "| Lambda / one process, round by round | 2.750x (2.500-3.000, 2 rounds) |" in text
    # a run that measured Lambda mode keeps its own figures, unmarked
    own = with_earlier_lambda(earlier, fleet_only)
    assert own is earlier and "From the run of" not in "\n".join(
        fleet_markdown(Report.from_dict(own))
    )
    assert with_earlier_lambda(fleet_only, None) is fleet_only


def test_the_report_shows_the_command_without_its_note():
    r = report(healthy_p99=3.0)
    r.command = "python -m bench.run --phases fleet --note 'a busy host' --rounds 2"
    text = "\n".join(fleet_markdown(r))
    assert "`python -m bench.run --phases fleet --rounds 2`" in text
    assert without_note("python -m bench.run --quick") == "python -m bench.run --quick"


def test_fleet_targets_of_an_earlier_full_run_give_way_to_a_later_fleet_run():
    full = report(healthy_p99=3.0)
    full.machine = {"cpu": "x86", "cores": "2", "os": "Linux", "kernel": "6", "python": "3.11"}
    fleet_targets(full)
    assert {t["phase"] for t in full.targets} == {"fleet"}
    later = asdict(report(healthy_p99=3.0))
    later["started"] = "2026-12-04 03:46 UTC"
    main = markdown(full, None, later).split("## Fleet and Lambda mode")[0]
    assert "fallback p99 from the fallback store" not in main
    assert "The fleet's targets are judged in section 6, from a later run" in main
    same = markdown(full, None, asdict(full)).split("## Fleet and Lambda mode")[0]
    assert "fallback p99 from the fallback store" in same and "later run" not in same
