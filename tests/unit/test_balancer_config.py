"""relay.balancer: the nginx configuration `relay dev --gateways N` runs in front of the
gateway processes."""

from __future__ import annotations

import re
import subprocess

import pytest

from relay import balancer


def render(tmp_path, ports=(9101, 9102, 9103)) -> str:
    return balancer.render_config(tmp_path, 9100, list(ports))


def location(conf: str) -> str:
    return conf[conf.index("location / {") :]


def test_round_robin_upstream_over_every_gateway_port_with_keepalive(tmp_path):
    conf = render(tmp_path)
    upstream = re.search(r"upstream gateways \{(.*?)\}", conf, re.S)
    assert upstream is not None
    body = upstream.group(1)
    assert re.findall(r"server 127\.0\.0\.1:(\d+)", body) == ["9101", "9102", "9103"]
    # round-robin is nginx's default: no other balancing method is named
    assert not re.search(r"\b(least_conn|ip_hash|hash|random)\b", body)
    assert re.search(r"keepalive \d+;", body)
    loc = location(conf)
    assert "proxy_pass http://gateways;" in loc
    assert "proxy_http_version 1.1;" in loc and 'proxy_set_header Connection "";' in loc
    assert "listen 127.0.0.1:9100;" in conf


def test_non_idempotent_requests_are_never_sent_to_a_second_gateway(tmp_path):
    loc = location(render(tmp_path))
    directive = re.search(r"proxy_next_upstream ([^;]*);", loc)
    assert directive is not None
    # no non_idempotent (a POST once sent stays with its gateway), no retry on timeout
    assert directive.group(1).split() == ["error"]


def test_client_address_replaces_any_forwarded_for_the_client_wrote(tmp_path):
    loc = location(render(tmp_path))
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in loc
    assert "$proxy_add_x_forwarded_for" not in loc


def test_everything_nginx_writes_is_under_its_prefix(tmp_path):
    conf = render(tmp_path)
    for directive in ("pid", "error_log", "client_body_temp_path", "proxy_temp_path"):
        m = re.search(rf"^\s*{directive} (\S+?)[;\s]", conf, re.M)
        assert m is not None and m.group(1).startswith(str(tmp_path)), directive
    assert "daemon off;" in balancer.argv("nginx", tmp_path, tmp_path / "nginx.conf")


@pytest.mark.parametrize(
    ("listen", "ports"), [(9100, []), (9100, [9101, 9101]), (9100, [9100, 9101])]
)
def test_refuses_missing_or_shared_ports(tmp_path, listen, ports):
    with pytest.raises(ValueError):
        balancer.render_config(tmp_path, listen, ports)


@pytest.mark.skipif(balancer.nginx_binary() is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path):
    nginx = balancer.nginx_binary()
    assert nginx is not None
    conf = balancer.write_config(tmp_path, 9100, [9101, 9102])
    argv = balancer.argv(nginx, tmp_path, conf)
    checked = subprocess.run(
        [*argv[:-2], "-t"], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_a_fleet_without_nginx_is_refused_before_anything_starts(tmp_path, monkeypatch):
    from relay.stack import LocalStack

    monkeypatch.setattr(balancer, "nginx_binary", lambda: None)
    stack = LocalStack(gateway_port=9100, state_dir=tmp_path, gateways=2)
    with pytest.raises(RuntimeError, match="nginx is not installed"):
        stack._start()
    assert stack.processes == {}  # not even the emulator


def test_one_gateway_needs_no_balancer():
    from relay.stack import LocalStack

    stack = LocalStack(gateway_port=9100)
    assert stack.gateway_names == ["gateway"]
    fleet = LocalStack(gateway_port=9100, gateways=3)
    assert fleet.gateway_names == ["gateway-1", "gateway-2", "gateway-3"]
