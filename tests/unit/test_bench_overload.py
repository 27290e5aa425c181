"""The overload phase's pieces (bench/overload.py) on fixed numbers: the wrk command, the
verdicts and the report section. No timing here."""

from __future__ import annotations

from typing import Any

from bench import overload
from bench.run import Report
from bench.verdicts import MET, MISSED
from shared_contracts.identity import Role

TOKENS = {Role.DRIVER: "driver.token.value", Role.DISPATCH: "dispatch.token.value"}


def tier(rps: float, p99: float, requests: int, errors: int = 0, shed: int = 0) -> dict:
    return {
        "rps": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "requests": requests,
        "errors": errors,
        "shed": shed,
    }


def a_round(critical_p99: float, *, critical_errors: int = 0, shed_p99: float = 2.0) -> dict:
    shedding = {
        "critical": tier(200, critical_p99, 2000, critical_errors),
        "degradable": tier(700, 20.0, 7000, 3500, 3500),
        "deferrable": tier(700, 4.0, 7000, 7000, 7000),
        "optional": tier(700, shed_p99, 7000, 7000, 7010),  # counted past wrk's end
        "cpu_seconds": 9.0,
        "halfway": {"in_flight": 3, "delay_ms": 4.1, "pressure": 0.04, "shedding": ["optional"]},
    }
    return {
        overload.UNLOADED: {"rps": 200, "p50_ms": 1.0, "p99_ms": 3.0, "requests": 2000},
        overload.SHEDDING: shedding,
        overload.POLITE: {**shedding, "critical": tier(200, 4.0, 2000)},
        overload.NO_SHEDDING: {t: tier(300, 400.0, 3000) for t in overload.TIERS},
    }


def report(rounds: list[dict[str, Any]]) -> Report:
    r = Report("2026-12-04 15:00 UTC", 10, len(rounds), 2, {}, {})
    r.command = "python -m bench.run --phases overload --out /tmp/o.md"
    r.overload = {
        "capacity": {"rps": 800.0, "p99_ms": 50.0, "requests": 8000, "errors": 0, "cpu_us": 1000.0},
        "step_us": 6.3,
        "rates": {"critical": 200, "degradable": 733, "deferrable": 733, "optional": 733},
        "connections": dict.fromkeys(overload.TIERS, 10),
        "settings": {"max_in_flight": 1000, "max_delay_ms": 100.0, "shed_at": {}},
        "rounds": rounds,
        "commands": {"capacity": "wrk ..."},
    }
    return r


def test_wrk_sends_each_tiers_request_with_its_callers_token_at_the_paced_rate():
    argv = overload.wrk_argv(
        "http://127.0.0.1:9000",
        ["critical", "optional"],
        TOKENS,
        seconds=5,
        connections=100,
        rate=2000,
    )
    after = argv[argv.index("--") + 1 :]
    assert after[0] == "50.000"  # 100 connections * 1000 / 2000 RPS: 50 ms between requests
    assert after[1] == "0"  # Retry-After ignored
    assert after[2].isdigit()  # the seed of its random pauses
    assert after[3:7] == ["GET", "/loads", "driver.token.value", "-"]
    assert after[7:10] == ["POST", "/dispatch/messages", "dispatch.token.value"]
    assert "-c100" in argv and "-d5s" in argv
    assert str(overload.BENCH / "overload.lua") in argv
    shown = overload.shown(argv, ["critical", "optional"])
    assert "token.value" not in shown
    assert "GET '/loads' $TOKEN" in shown
    # each wrk draws its own pauses: several started together do not send in step
    seeds = {
        overload.wrk_argv("http://x", ["optional"], TOKENS, seconds=1, connections=8, rate=80)[
            argv.index("--") + 3
        ]
        for _ in range(3)
    }
    assert len(seeds) == 3


def test_full_speed_has_no_pause_and_a_polite_client_waits_after_a_503():
    argv = overload.wrk_argv("http://x", ["critical"], TOKENS, seconds=1, connections=8, rate=None)
    assert argv[argv.index("--") + 1] == "0"
    polite = overload.wrk_argv(
        "http://x", ["critical"], TOKENS, seconds=1, connections=8, rate=80, after_503_ms=1000
    )
    assert polite[polite.index("--") + 1 : polite.index("--") + 3] == ["100.000", "1000"]


def test_critical_within_twice_its_unloaded_p99_and_fast_sheds_meet_the_targets():
    r = report([a_round(5.0), a_round(5.5), a_round(6.0)])  # unloaded p99 3 ms
    overload.targets(r)
    critical, shed = r.targets
    assert critical["verdict"] == MET
    assert "1.83x" in critical["measured"]  # 5.5 ms over 3 ms, the median round
    assert shed["verdict"] == MET


def test_critical_past_twice_its_unloaded_p99_misses():
    r = report([a_round(7.0) for _ in range(3)])
    overload.targets(r)
    assert r.targets[0]["verdict"] == MISSED
    assert "2.33x" in r.targets[0]["measured"]


def test_a_critical_error_misses_the_target_whatever_the_latency():
    r = report([a_round(4.0), a_round(4.0, critical_errors=1), a_round(4.0)])
    overload.targets(r)
    assert r.targets[0]["verdict"] == MISSED
    assert "success 99.95%" in r.targets[0]["measured"]
    assert all(t["phase"] == "overload" for t in r.targets)


def test_slow_sheds_miss_their_target():
    r = report([a_round(4.0, shed_p99=9.0) for _ in range(3)])
    overload.targets(r)
    assert r.targets[1]["verdict"] == MISSED


def test_the_section_shows_every_tier_shares_shed_and_what_a_shed_costs():
    r = report([a_round(4.0), a_round(4.5), a_round(5.0)])
    overload.targets(r)
    text = "\n".join(overload.markdown(r))
    assert text.startswith("## Overload (run of 2026-12-04 15:00 UTC; 3 rounds)")
    assert "--out" not in text  # where that run's report went is not what it measured
    assert "| shedding | optional: POST /dispatch/messages | 733 |" in text
    assert "100.0% (100.0-100.0, 3 rounds) |" in text  # 7,010 counted of 7,000: capped
    assert "| no shedding | critical: GET /loads |" in text
    assert f"| {overload.POLITE} | critical: GET /loads | 200 |" in text
    # 9 s of CPU: 5,500 forwards at 1,000 us, the rest over 17,510 sheds: ~200 us each
    assert "a shed request ~200 us" in text
    assert f"- [{MET}] critical GET /loads p99" in text
    assert f"- [{MET}] a shed answer's p99" in text


def test_no_figures_no_section():
    assert overload.markdown(None) == []
    assert overload.markdown(Report("x", 1, 2, 1, {}, {})) == []
