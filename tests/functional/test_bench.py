"""The benchmark's own arithmetic: what it reads from wrk and py-spy, and the Lambda
environments it imports each handler under. (The benchmark itself runs with `make bench`.)"""

from __future__ import annotations

import pytest

from bench.harness import LOAD_BODY, parse_wrk
from bench.run import lambda_functions, self_time_by_file
from shared_contracts.loads import LoadList

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40433/loads
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.21ms  612.10us  21.40ms   91.10%
    Req/Sec     9.87k   310.22    10.31k    80.00%
  Latency Distribution
     50%    3.12ms
     75%    3.40ms
     90%    3.71ms
     99%    4.82ms
  98712 requests in 10.00s, 110.31MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:   9870.12
Transfer/sec:     11.03MB
"""


def test_wrk_report_is_read_with_units_and_every_kind_of_error():
    r = parse_wrk(WRK_OUTPUT)
    assert (r.rps, r.p50_ms, r.p99_ms, r.requests) == (9870.12, 3.12, 4.82, 98712)
    assert r.errors == 10  # 2 read errors + 1 timeout + 7 non-2xx
    assert r.success_rate == pytest.approx(1 - 10 / 98712)


def test_wrk_latencies_in_microseconds_and_seconds():
    text = WRK_OUTPUT.replace("3.12ms", "812.00us").replace("4.82ms", "2.02s")
    r = parse_wrk(text)
    assert (r.p50_ms, r.p99_ms) == (0.812, 2020.0)


def test_profile_shares_by_innermost_python_file():
    raw = (
        "main (runpy:1);forward (/x/gateway/proxy.py:10);write (/x/gateway/transport.py:96) 6\n"
        "main (runpy:1);get (/v/site-packages/httpx/_models.py:248) 2\n"
        "main (runpy:1); 2\n"
    )
    shares = self_time_by_file(raw)
    assert shares["/x/gateway/transport.py"] == 0.6
    assert shares["httpx/_models.py"] == 0.2
    assert shares["native code and idle (uvloop, httptools, system calls)"] == 0.2


def test_every_deployed_handler_gets_its_template_environment():
    functions = lambda_functions()
    # Every function that serves a request or a queue (deploy hooks and projectors may join)
    assert set(functions) >= {
        "gateway.handler",
        "gateway.deferred.replayer",
        "modules.loads.handler",
        "modules.gatepass.handler",
        "modules.navigate.handler",
        "modules.message.handler",
        "modules.notifications.handler",
    }
    gateway = functions["gateway.handler"]
    assert gateway["RELAY_STAGE"] == "prod"
    assert gateway["RELAY_JWKS_URL"].startswith("https://127.0.0.1/")  # never a real host
    assert "BEGIN PUBLIC KEY" in functions["modules.loads.handler"]["RELAY_IDENTITY_PUBLIC_KEY"]


def test_the_upstream_answers_a_real_load_assignment():
    assert LoadList.model_validate_json(LOAD_BODY).items[0].load_id == "L-5001"


def test_the_upstreams_answer_the_list_as_the_loads_module_does(tmp_path):
    import asyncio

    import httpx

    from bench.callgrind_forward import Module
    from bench.harness import Nginx
    from module_kit.etag import entity_tag

    # GIVEN the benchmark's nginx upstream and the in-process stub of the loads module
    nginx = Nginx(tmp_path)
    nginx.start()
    try:
        served = httpx.get(f"http://127.0.0.1:{nginx.upstream_port}/loads")
        proxied = httpx.get(f"http://127.0.0.1:{nginx.proxy_port}/loads")
    finally:
        nginx.stop()
    stub = asyncio.run(
        Module(LOAD_BODY.encode()).handle_async_request(httpx.Request("GET", "http://loads/"))
    )
    # THEN each answers the list with the tag the module makes and its revalidation headers
    for answer in (served, proxied, stub):
        assert answer.content == LOAD_BODY.encode()
        content_type = answer.headers["content-type"].encode()
        assert answer.headers["etag"] == entity_tag(answer.content, content_type).decode()
        assert answer.headers["cache-control"] == "private, no-cache"
        assert answer.headers["vary"] == "Authorization"


def test_etag_cost_times_the_tag_and_the_conditional_get_on_the_benchmark_list():
    from bench import etag_cost
    from gateway.forwarding.conditional import ETAG, entity_tag

    # the answer it times is the benchmark's list, tagged by the gateway's own function
    tagged = etag_cost.conditional_get("GET", etag_cost.REQUEST, etag_cost.answer())
    assert tagged.status_code == 200 and tagged.body == LOAD_BODY.encode()
    assert (ETAG, entity_tag(LOAD_BODY.encode(), b"application/json")) in tagged.raw_headers
    costs = etag_cost.costs(number=20, repeat=1)
    assert set(costs) == {
        "SHA-256 of the list",
        "BLAKE2b of the list",
        "entity_tag",
        "conditional_get",
    }
    assert all(us > 0 for us in costs.values())


# --- the cells phase (bench/cell_cost.py): made-up figures, no timing --------------------


def _cells_report(celled: list[float] | None = None, radius: list[dict] | None = None) -> dict:
    from dataclasses import asdict

    from bench import cell_cost
    from bench.run import Report

    r = Report("2026-12-04 09:40 UTC", 10, 3, 2, {}, {}, command="python -m bench.run")
    r.cells = {
        "instructions": {
            "uncelled": [557_600.0, 557_700.0, 557_500.0],
            "celled": celled or [570_000.0, 570_100.0, 569_900.0],
            "uncelled-write": [600_000.0, 600_000.0, 600_000.0],
            "celled-write": [615_000.0, 615_000.0, 615_000.0],
        },
        "requests": [200, 1200],
        "drivers": 20,
        "placed": 4,
        "tree": "86e1662",
        "commands": ["PYTHONHASHSEED=0 valgrind --tool=callgrind ... --forward celled"],
        "blast_radius": radius or [],
    }
    cell_cost.targets(r)
    return asdict(r)


def _reads(cell_of: dict[str, str], kinds: dict[str, str]) -> list:
    return [(d, kinds.get(d, "live"), 0.02, 200) for d in sorted(cell_of)]


def test_cell_blast_radius_counts_each_driver_by_their_worst_read():
    from bench.cell_cost import _summary, isolated, outcome, worst

    assert outcome(200, degraded=False) == "live" and outcome(200, degraded=True) == "degraded"
    assert outcome(503, degraded=False) == outcome(None, degraded=False) == "failed"
    assert worst(["live", "degraded", "live"]) == "degraded"
    assert worst(["degraded", "failed"]) == "failed"
    cell_of = {f"D-{n}": "cell-1" if n < 4 else "cell-2" for n in range(10)}
    before = _reads(cell_of, {})
    first = _reads(cell_of, {"D-0": "degraded", "D-1": "degraded"})
    second = _reads(cell_of, {"D-0": "degraded", "D-1": "degraded", "D-2": "degraded"})
    b = _summary(
        cells=["cell-1", "cell-2"],
        cell_of=cell_of,
        before=before,
        during=[first, second],
        breakers={"loads/cell-1": "open", "loads/cell-2": "closed"},
        seconds={"projected_in": 1.0, "all": 60.0},
    )
    assert (b["live"], b["degraded"], b["failed"]) == (7, 3, 0)
    assert (b["expected_share"], b["actual_share"], b["share_degraded"]) == (0.5, 0.4, 0.3)
    assert (b["healthy_live"], b["healthy_drivers"], b["drivers_in_bad_cell"]) == (6, 6, 4)
    assert b["healthy_during"]["reads"] == 12 and b["healthy_during"]["p99_ms"] == 20.0
    assert isolated(b)
    # a healthy cell's driver degraded, or any driver failed: the fault left its cell
    leaked = _summary(
        cells=["cell-1", "cell-2"],
        cell_of=cell_of,
        before=before,
        during=[_reads(cell_of, {"D-0": "degraded", "D-9": "degraded"})],
        breakers={},
        seconds={"projected_in": 1.0, "all": 60.0},
    )
    assert not isolated(leaked)


def test_cells_section_shows_the_counts_the_ratio_and_the_blast_radius_next_to_1_over_n():
    from bench import cell_cost, verdicts
    from bench.cell_cost import _summary
    from bench.run import Report, markdown

    cell_of = {f"D-{n}": "cell-1" if n < 3 else "cell-2" for n in range(9)}
    b = _summary(
        cells=["cell-1", "cell-2", "cell-3"],
        cell_of=cell_of,
        before=_reads(cell_of, {}),
        during=[_reads(cell_of, {"D-0": "degraded", "D-1": "degraded", "D-2": "degraded"})],
        breakers={"loads/cell-1": "open"},
        seconds={"projected_in": 2.0, "all": 90.0},
    )
    figures = _cells_report(radius=[b])
    hop, write, radius = figures["targets"]
    assert hop["phase"] == write["phase"] == radius["phase"] == "cells"
    assert hop["verdict"] == write["verdict"] == radius["verdict"] == verdicts.MET
    text = "\n".join(cell_cost.markdown(Report.from_dict(figures)))
    assert "## Cells (run of 2026-12-04 09:40 UTC; 3 rounds)" in text
    assert f"| GET /loads, {cell_cost.UNCELLED} | 557,600 (557,500-557,700, 3 rounds) |" in text
    assert "| GET /loads: celled / uncelled, round by round | 1.022x" in text
    assert "| POST /loads/L-1/events: celled / uncelled, round by round | 1.025x" in text
    assert "| 3 | 9 | 33.3% | 3 (33.3%) | 3 (33.3%) | 0 (0.0%) | 6 of 6 |" in text
    assert "- [met] one of 3 loads cells black-holed" in text
    # the whole report: the target's line, and the section after the release's
    whole = markdown(None, None, None, None, figures)
    assert "- *Cells*: with loads in 2 cells" in whole and "## Cells (run of" in whole


def test_cell_routing_costing_more_than_5_percent_misses():
    from bench import cell_cost, verdicts
    from bench.run import Report

    figures = _cells_report(celled=[600_000.0, 600_100.0, 599_900.0])
    hop, write = figures["targets"]
    assert hop["verdict"] == verdicts.MISSED and write["verdict"] == verdicts.MET
    text = "\n".join(cell_cost.markdown(Report.from_dict(figures)))
    assert "(blast radius: not run)" in text


def test_cell_cost_forwards_in_process_celled_reads_and_writes(monkeypatch):
    import asyncio

    import bench.callgrind_forward
    from bench import cell_cost
    from gateway.cells.placement import default_cell

    monkeypatch.setattr(bench.callgrind_forward, "callgrind", lambda switch: None)
    placed = cell_cost.placements()
    assert len(placed) == cell_cost.PLACED
    assert all(p.cell != default_cell(d, cell_cost.CELLS) for d, p in placed.items())
    asyncio.run(cell_cost._forwards("celled", 5))  # exits on any answer but 200
    asyncio.run(cell_cost._forwards("celled-write", 5))
