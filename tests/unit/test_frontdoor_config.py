"""relay.frontdoor: the nginx configuration of the two-region front door (which gateway
answers each region's hostname), and the local stack's region names, without processes."""

from __future__ import annotations

import re

import pytest

from relay import frontdoor
from relay.frontdoor import answering, hostname
from relay.stack import LocalStack, log_name, module_of, split_region

PORTS = {"us-east-1": 9101, "us-west-2": 9102}
REGIONS = list(PORTS)


def render(tmp_path, serving=REGIONS, generation=1) -> str:
    return frontdoor.render_config(
        tmp_path,
        9100,
        PORTS,
        answering(REGIONS, serving),
        status_port=9109,
        generation=generation,
    )


def servers(conf: str) -> dict[str, tuple[str, bool]]:
    """server_name -> (the upstream it proxies to, whether it is the default server)."""
    out = {}
    for block in re.findall(r"server \{(.*?)\n    \}", conf, re.S):
        name = re.search(r"server_name (\S+);", block)
        if name is None:
            continue
        upstream = re.search(r"proxy_pass http://(\S+);", block)
        assert upstream is not None
        out[name.group(1)] = (upstream.group(1), "default_server" in block)
    return out


def upstream_ports(conf: str) -> dict[str, list[str]]:
    return {
        name: re.findall(r"server 127\.0\.0\.1:(\d+)", body)
        for name, body in re.findall(r"upstream (\S+) \{(.*?)\}", conf, re.S)
    }


def test_each_region_s_hostname_goes_to_its_own_gateway_while_both_serve(tmp_path):
    conf = render(tmp_path)
    assert upstream_ports(conf) == {"region_us_east_1": ["9101"], "region_us_west_2": ["9102"]}
    assert servers(conf) == {
        "us-east-1.relay.localhost": ("region_us_east_1", True),
        "us-west-2.relay.localhost": ("region_us_west_2", False),
    }
    assert conf.count("listen 127.0.0.1:9100") == 2


def test_an_evacuated_region_s_hostname_goes_to_the_serving_region(tmp_path):
    conf = render(tmp_path, serving=["us-west-2"])
    assert servers(conf) == {
        # still the default server (any other Host is the primary's hostname), answered by
        # the region that serves
        "us-east-1.relay.localhost": ("region_us_west_2", True),
        "us-west-2.relay.localhost": ("region_us_west_2", False),
    }
    conf = render(tmp_path, serving=["us-east-1"])
    assert {h: u for h, (u, _) in servers(conf).items()} == {
        "us-east-1.relay.localhost": "region_us_east_1",
        "us-west-2.relay.localhost": "region_us_east_1",
    }


def test_with_no_region_serving_each_hostname_stays_home_as_route_53_does():
    assert answering(REGIONS, []) == {"us-east-1": "us-east-1", "us-west-2": "us-west-2"}
    assert answering(["a-b-1", "c-d-2", "e-f-3"], ["e-f-3"]) == {
        "a-b-1": "e-f-3",
        "c-d-2": "e-f-3",
        "e-f-3": "e-f-3",
    }


def test_requests_are_proxied_as_the_balancer_proxies_them(tmp_path):
    conf = render(tmp_path)
    for block in re.findall(r"location / \{(.*?)\}", conf, re.S):
        directive = re.search(r"proxy_next_upstream ([^;]*);", block)
        # never a second try of a POST once a gateway had it, never on timeout
        assert directive is not None and directive.group(1).split() == ["error"]
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in block
        assert "proxy_set_header Host $http_host;" in block
        assert 'proxy_set_header Connection "";' in block
    assert "$proxy_add_x_forwarded_for" not in conf
    assert all(re.search(r"keepalive \d+;", b) for b in re.findall(r"upstream \S+ \{(.*?)\}", conf))


def test_the_status_server_answers_the_configuration_s_generation(tmp_path):
    conf = render(tmp_path, generation=7)
    status = re.search(r"listen 127\.0\.0\.1:9109;(.*?)\n    \}", conf, re.S)
    assert status is not None
    assert f"location = {frontdoor.STATUS_PATH}" in status.group(1)
    assert 'return 200 "7";' in status.group(1)
    for directive in ("pid", "error_log", "client_body_temp_path", "proxy_temp_path"):
        m = re.search(rf"^\s*{directive} (\S+?)[;\s]", conf, re.M)
        assert m is not None and m.group(1).startswith(str(tmp_path)), directive


@pytest.mark.parametrize(
    ("ports", "targets", "status"),
    [
        ({}, {}, 9109),
        (PORTS, {"us-east-1": "us-east-1"}, 9109),  # a hostname with no target
        (PORTS, {"us-east-1": "eu-west-1", "us-west-2": "us-west-2"}, 9109),
        (PORTS, answering(REGIONS, REGIONS), 9101),  # the status port is a gateway's
        ({"us-east-1": 9100, "us-west-2": 9102}, answering(REGIONS, REGIONS), 9109),
    ],
)
def test_a_front_door_that_cannot_work_is_refused(tmp_path, ports, targets, status):
    with pytest.raises(ValueError):
        frontdoor.render_config(tmp_path, 9100, ports, targets, status_port=status, generation=1)


def test_hostnames_are_loopback_names():
    assert hostname("us-west-2") == "us-west-2.relay.localhost"


def test_the_second_region_runs_its_critical_modules_under_its_name():
    stack = LocalStack(regions=("us-east-1", "us-west-2"), cells=2)
    assert stack.primary_region == "us-east-1" and stack.multi_region
    assert stack.region_module_processes("us-east-1") == stack.module_processes
    assert stack.region_module_processes("us-west-2") == {
        "us-west-2/loads/cell-1": ("LoadsFunction", "cell-1"),
        "us-west-2/loads/cell-2": ("LoadsFunction", "cell-2"),
        "us-west-2/gatepass": ("GatepassFunction", None),
    }
    assert stack.region_gateway_names("us-west-2") == ["us-west-2/gateway"]
    assert stack.region_gateway_names("us-east-1") == ["gateway"]
    assert stack.process_name("us-east-1", "replay") == "replay"
    assert stack.process_name("us-west-2", "replay") == "us-west-2/replay"


def test_a_region_prefix_is_told_from_a_cell():
    assert split_region("us-west-2/loads/cell-1") == ("us-west-2", "loads/cell-1")
    assert split_region("loads/cell-1") == (None, "loads/cell-1")
    assert split_region("gateway") == (None, "gateway")
    assert module_of("us-west-2/loads/cell-1") == "loads"
    assert module_of("us-west-2/gatepass") == "gatepass"
    assert module_of("loads/cell-2") == "loads"
    assert log_name("us-west-2/gateway") == "us-west-2-gateway.log"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"regions": ()}, "at least one region"),
        ({"regions": ("us-east-1", "us-east-1")}, "named twice"),
        ({"regions": ("us-east-1", "Mars")}, "not a region name"),
        ({"regions": ("us-east-1", "us-west-2", "eu-west-1")}, "one or two regions"),
        ({"regions": ("us-east-1", "us-west-2"), "gateways": 2}, "without --gateways"),
    ],
)
def test_region_settings_that_cannot_run_are_refused_before_anything_starts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalStack(**kwargs).check_regions()
