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
