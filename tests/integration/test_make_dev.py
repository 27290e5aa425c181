"""`relay dev` (what `make dev` runs): the printed curl works, the printed dashboard opens
with the printed ops token, and Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from relay.cloud import ROOT
from relay.stack import free_port

START_TIMEOUT_SECONDS = 60


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_relay_dev_prints_a_working_curl_and_stops_cleanly(tmp_path: Path, tls: bool):
    port = free_port()
    env = {**os.environ, "RELAY_STATE_DIR": str(tmp_path)}
    argv = [sys.executable, "-m", "relay.cli", "dev", "--port", str(port)] + (
        ["--tls"] if tls else []
    )
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "relay dev exited early:\n" + "".join(lines)
            lines.append(line)
            if line.strip().startswith("curl "):
                break
        curl = shlex.split(lines[-1].strip())
        header = curl[curl.index("-H") + 1]
        url = curl[-1]
        assert url == f"{'https' if tls else 'http'}://127.0.0.1:{port}/loads"
        verify: ssl.SSLContext | bool = True
        if tls:
            verify = ssl.create_default_context(cafile=curl[curl.index("--cacert") + 1])

        r = httpx.get(url, headers=dict([header.split(": ", 1)]), timeout=10, verify=verify)
        assert r.status_code == 200
        assert {ld["driver_id"] for ld in r.json()["items"]} == {"D-1001"}

        # the dashboard's address beside the gateway's, and the ops token it asks for
        shown = next(ln for ln in lines if ln.startswith("dashboard: "))
        dashboard = re.match(r"dashboard: (http://127\.0\.0\.1:\d+/) ", shown)
        assert dashboard, shown
        ops_token = lines[next(i for i, ln in enumerate(lines) if ln.startswith("Ops token")) + 1]
        page = httpx.get(dashboard[1], timeout=10)
        assert page.status_code == 200 and 'id="login"' in page.text
        assert httpx.get(dashboard[1] + "api/dashboard", timeout=10).status_code == 401
        view = httpx.get(
            dashboard[1] + "api/dashboard",
            headers={"authorization": f"Bearer {ops_token.strip()}"},
            timeout=10,
        )
        assert view.status_code == 200, view.text  # the gateway accepted the printed token
        assert view.json()["gateway_url"] == f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        assert set(view.json()["status"]["modules"]) >= {"gatepass", "navigate", "message"}
        ports = [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)", "".join(lines))]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)

    for p in set(ports):  # every process it started is gone
        try:
            httpx.get(f"http://127.0.0.1:{p}/", timeout=1, verify=False)  # noqa: S501 - any server
            raise AssertionError(f"something still listens on {p}")
        except httpx.TransportError:
            pass
