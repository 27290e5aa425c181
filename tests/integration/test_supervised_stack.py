"""Game day tooling: a supervised stack (what `relay dev` runs) keeps serving when a process
dies, restarts it by itself, and `relay stop|start|ps` hold and release processes by name."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from relay.cloud import ROOT
from relay.stack import LocalStack, free_port
from relay.supervisor import RestartPolicy
from shared_contracts.identity import Role
from tests.integration.conftest import run_relay, wait_until

# Short restarts, so that the test proves the supervisor restarts within its deadline.
POLICY = RestartPolicy(initial_seconds=0.5, max_seconds=2)
CLI_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Overrides conftest's stack: this one is supervised, as relay dev's is."""
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        supervise=True,
        restart_policy=POLICY,
    ) as s:
        yield s


def healthy(stack: LocalStack, name: str) -> bool:
    try:
        return httpx.get(stack.module_url(name) + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def relay(stack: LocalStack, *args: str) -> subprocess.CompletedProcess:
    """The `relay` CLI as a developer runs it, against this stack's state dir."""
    return run_relay(stack, *args, timeout=CLI_TIMEOUT_SECONDS)


def supervisor_log(stack: LocalStack) -> str:
    path = stack.state_dir / "logs" / "supervisor.log"
    return path.read_text() if path.exists() else ""


class Console:
    """`relay dev`'s console, read line by line without ever blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(proc,), daemon=True).start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.put(line)

    def wait_for(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError("not on relay dev's console in time:\n" + "".join(self.seen))


def test_relay_dev_restarts_a_killed_module_and_says_so(tmp_path):
    # GIVEN `relay dev` (what `make dev` runs), up and printing its curl
    env = {**os.environ, "RELAY_STATE_DIR": str(tmp_path)}
    dev = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "dev", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    console = Console(dev)
    try:
        curl = shlex.split(console.wait_for(lambda line: line.startswith("curl "), timeout=60))
        headers = dict([curl[curl.index("-H") + 1].split(": ", 1)])
        url = curl[-1]
        ps = subprocess.run(
            [sys.executable, "-m", "relay.cli", "ps"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_SECONDS,
        )
        # relay dev runs 2 loads cells: the curl's driver (D-1001) is in cell-1 by default
        loads_pid = int(
            next(
                line.split()[2]
                for line in ps.stdout.splitlines()
                if line.startswith("loads/cell-1 ")
            )
        )

        # WHEN the driver's loads process is SIGKILLed
        os.kill(loads_pid, signal.SIGKILL)

        # THEN relay dev says so, restarts it after 1 s, and keeps serving
        console.wait_for(
            lambda line: "loads/cell-1 exited with code -9; restarting in 1 s" in line, timeout=10
        )
        console.wait_for(lambda line: "loads/cell-1 restarted (pid" in line, timeout=10)

        def live() -> bool:
            r = httpx.get(url, headers=headers, timeout=5)
            return r.status_code == 200 and "relay-degraded" not in r.headers

        assert wait_until(live, timeout=20)
        assert dev.poll() is None
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)


def test_a_killed_module_is_restarted_while_the_gateway_keeps_serving(api, stack):
    driver = api.auth(Role.DRIVER, "D-1001")
    assert api.http.get("/loads", headers=driver).status_code == 200
    loads = stack.processes["loads"]
    old_pid = loads.pid

    # WHEN the loads process is SIGKILLed
    os.kill(old_pid, signal.SIGKILL)
    assert wait_until(lambda: not loads.running(), timeout=5)

    # THEN the gateway still answers other modules' routes, live
    inbox = api.http.get("/message", headers=driver)
    assert inbox.status_code == 200 and "relay-degraded" not in inbox.headers
    passes = api.http.get("/gatepass", headers=driver)
    assert passes.status_code == 200 and "relay-degraded" not in passes.headers
    # AND the supervisor says what happened and brings loads back by itself, on its port
    assert wait_until(lambda: healthy(stack, "loads"), timeout=20)
    assert loads.pid != old_pid
    assert "loads exited with code -9; restarting in 0.5 s" in supervisor_log(stack)
    assert "loads restarted (pid" in supervisor_log(stack)

    def live_loads() -> bool:
        r = api.http.get("/loads", headers=driver)
        return r.status_code == 200 and "relay-degraded" not in r.headers

    assert wait_until(live_loads, timeout=20)
    assert stack.supervisor.status()["loads"]["restarts"] == 1


def test_relay_stop_keeps_a_module_down_until_relay_start(api, stack):
    # WHEN an operator stops loads with the CLI
    stopped = relay(stack, "stop", "loads")
    assert stopped.returncode == 0, stopped.stderr
    assert "loads stopped" in stopped.stdout
    # THEN it stays down for many times its restart backoff
    assert not wait_until(lambda: healthy(stack, "loads"), timeout=6 * POLICY.initial_seconds)
    ps = relay(stack, "ps")
    assert ps.returncode == 0, ps.stderr
    rows = {line.split()[0]: line.split() for line in ps.stdout.splitlines()[1:]}
    assert rows["loads"][1:3] == ["stopped", "-"]
    assert rows["gateway"][1] == "running" and rows["gateway"][-1] == stack.gateway_url
    assert set(rows) == set(stack.processes)

    # WHEN it is started again / THEN it answers as soon as the command returns
    started = relay(stack, "start", "loads")
    assert started.returncode == 0, started.stderr
    assert healthy(stack, "loads")
    assert relay(stack, "stop", "no-such").returncode == 1


def test_a_killed_emulator_comes_back_with_the_templates_resources(api, stack):
    driver = api.auth(Role.DRIVER, "D-1001")
    # WHEN the emulator (every table, queue and key) is SIGKILLed
    os.kill(stack.processes["emulator"].pid, signal.SIGKILL)

    # THEN it is restarted, redeployed from template.yaml and reseeded: the driver's
    # loads are live again, and gatepass signs with the new key
    def live_loads() -> list[str]:
        r = api.http.get("/loads", headers=driver)
        if r.status_code != 200 or "relay-degraded" in r.headers:
            return []
        return [load["load_id"] for load in r.json()["items"]]

    assert wait_until(lambda: live_loads() == ["L-5001", "L-5002"], timeout=30)
    assert wait_until(lambda: "restarting gatepass" in supervisor_log(stack), timeout=30)
    assert wait_until(lambda: healthy(stack, "gatepass"), timeout=30)
    gate_pass = api.http.post(
        "/gatepass", json={"load_id": "L-5001", "facility_id": "F-CHI"}, headers=driver
    )
    assert gate_pass.status_code == 201, gate_pass.text
    assert "relay-degraded" not in gate_pass.headers
