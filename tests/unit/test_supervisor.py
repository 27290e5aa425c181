"""relay dev's supervision: restart with backoff on an injected clock, holds, control socket.

The backoff logic runs against fake processes and a clock moved by hand; the stack-level
tests use tiny real `python -c` processes (no ports, no emulator).
"""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relay import cli
from relay.stack import LocalStack, Process
from relay.supervisor import (
    ControlError,
    ControlServer,
    RestartPolicy,
    Supervisor,
    control_request,
    control_socket_path,
)
from tests.fakes import MonotonicClock


class FakeChild:
    def __init__(self) -> None:
        self.alive = True
        self.starts = 0
        self.code: int | None = None
        self.fail_start: OSError | None = None

    @property
    def pid(self) -> int | None:
        return 4000 + self.starts if self.alive else None

    @property
    def exit_code(self) -> int | None:
        return None if self.alive else self.code

    def running(self) -> bool:
        return self.alive

    def start(self) -> None:
        if self.fail_start:
            raise self.fail_start
        self.starts += 1
        self.alive = True

    def crash(self, code: int = -9) -> None:
        self.alive, self.code = False, code


@pytest.fixture
def world():
    clock, child, events, restarted = MonotonicClock(start=500.0), FakeChild(), [], []
    supervisor = Supervisor(
        {"loads": child}, clock=clock, report=events.append, on_restart=restarted.append
    )
    return clock, child, supervisor, events, restarted


def test_backoff_doubles_from_one_second_to_thirty():
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert RestartPolicy(initial_seconds=0.5, max_seconds=3).delay(4) == 3
    with pytest.raises(ValueError):
        RestartPolicy(initial_seconds=5, max_seconds=1)
    with pytest.raises(ValueError):
        RestartPolicy(initial_seconds=0)


def test_an_exited_process_is_reported_and_restarted_after_its_backoff(world):
    clock, child, supervisor, events, restarted = world
    # GIVEN loads is killed
    child.crash(-9)
    # WHEN the supervisor looks
    supervisor.tick()
    # THEN it says so, and does not restart it before the backoff is over
    assert events == ["loads exited with code -9; restarting in 1 s"]
    assert child.starts == 0 and supervisor.status()["loads"]["state"] == "restarting"
    clock.now += 0.9
    supervisor.tick()
    assert child.starts == 0
    # WHEN the second is over / THEN it is started again, once
    clock.now += 0.1
    assert supervisor.tick() == ["loads"]
    assert child.starts == 1 and restarted == ["loads"]
    assert events[-1] == "loads restarted (pid 4001)"
    supervisor.tick()
    assert child.starts == 1
    assert supervisor.status()["loads"] == {
        "state": "running",
        "pid": 4001,
        "restarts": 1,
        "last_exit": -9,
        "restart_in": None,
    }


def crash_and_restart(clock: MonotonicClock, child: FakeChild, supervisor: Supervisor) -> float:
    """Crash the child, run the supervisor until it restarts it; the wait it took."""
    child.crash()
    supervisor.tick()
    waited = supervisor.watches["loads"].restart_at - clock.now
    clock.now += waited
    supervisor.tick()
    assert child.running()
    return waited


def test_a_crash_loop_backs_off_exponentially_up_to_the_cap(world):
    clock, child, supervisor, _, _ = world
    assert [crash_and_restart(clock, child, supervisor) for _ in range(7)] == [
        1,
        2,
        4,
        8,
        16,
        30,
        30,
    ]


def test_the_backoff_resets_only_after_the_process_stayed_up_long_enough(world):
    clock, child, supervisor, _, _ = world
    assert [crash_and_restart(clock, child, supervisor) for _ in range(3)] == [1, 2, 4]
    # up 59 s: still a crash loop
    clock.now += 59
    supervisor.tick()
    assert crash_and_restart(clock, child, supervisor) == 8
    # up 60 s: a fresh start
    clock.now += 60
    supervisor.tick()
    assert crash_and_restart(clock, child, supervisor) == 1


def test_a_held_process_stays_down_until_released(world):
    clock, child, supervisor, events, _ = world
    # GIVEN loads is stopped on purpose
    supervisor.hold("loads")
    child.crash(0)
    # WHEN a long time passes
    for _ in range(10):
        clock.now += 60
        supervisor.tick()
    # THEN it was never restarted, nor reported as a crash
    assert child.starts == 0 and events == []
    assert supervisor.status()["loads"]["state"] == "stopped"
    # WHEN it is released and started, then crashes / THEN it is supervised afresh
    supervisor.release("loads")
    child.start()
    assert crash_and_restart(clock, child, supervisor) == 1


def test_a_process_that_cannot_be_started_is_tried_again_later(world):
    clock, child, supervisor, events, _ = world
    child.crash(1)
    supervisor.tick()
    child.fail_start = OSError("no such file")
    clock.now += 1
    supervisor.tick()
    assert events[-1] == "loads could not be started (no such file); restarting in 2 s"
    child.fail_start = None
    clock.now += 2
    assert supervisor.tick() == ["loads"]


def test_run_survives_a_failing_tick_and_stops_when_asked():
    stop = threading.Event()
    looks = []

    class Flaky(FakeChild):
        def running(self) -> bool:
            looks.append(1)
            if len(looks) == 1:
                raise RuntimeError("boom")
            if len(looks) == 3:
                stop.set()
            return True

    Supervisor({"x": Flaky()}, report=lambda m: None).run(stop, interval=0)
    assert len(looks) == 3


def test_control_socket_answers_one_json_line_per_request(tmp_path):
    seen = []

    def handle(request):
        seen.append(request)
        if request.get("command") == "boom":
            raise ValueError("bad")
        return {"ok": True, "echo": request}

    server = ControlServer(tmp_path / "control.sock", handle)
    server.start()
    try:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert control_request(server.path, {"command": "ps"}) == {
            "ok": True,
            "echo": {"command": "ps"},
        }
        answer = control_request(server.path, {"command": "boom"})
        assert answer["ok"] is False and "bad" in answer["error"]
    finally:
        server.close()
    assert not server.path.exists()
    with pytest.raises(ControlError, match="no running stack"):
        control_request(server.path, {"command": "ps"}, timeout=1)


def test_a_long_state_dir_gets_a_short_socket_path(tmp_path):
    long_dir = tmp_path / ("d" * 120)
    path = control_socket_path(long_dir)
    assert len(os.fsencode(path)) <= 100 and path == control_socket_path(long_dir)
    assert control_socket_path(tmp_path) == tmp_path.resolve() / "control.sock"


# --- a supervised LocalStack of tiny real processes ----------------------------------


def sleeper(tmp_path: Path, name: str) -> Process:
    return Process(
        name,
        [sys.executable, "-c", "import time; time.sleep(60)"],
        dict(os.environ),
        tmp_path / "logs" / f"{name}.log",
    )


@pytest.fixture
def tiny_stack(tmp_path):
    events: list[str] = []
    stack = LocalStack(
        state_dir=tmp_path,
        supervise=True,
        on_event=events.append,
        restart_policy=RestartPolicy(initial_seconds=0.1, max_seconds=0.2),
    )
    stack.processes = {"loads": sleeper(tmp_path, "loads"), "replay": sleeper(tmp_path, "replay")}
    for proc in stack.processes.values():
        proc.start()
    # supervised, but ticked by hand (no supervision thread)
    stack.supervisor = Supervisor(stack.processes, policy=stack.restart_policy, report=stack.report)
    stack._control = ControlServer(stack.control_socket, stack.control)
    stack._control.start()
    (tmp_path / "stack.json").write_text(json.dumps({"control_socket": str(stack.control_socket)}))
    yield stack, events
    stack.stop()


def test_stop_process_holds_it_and_start_process_brings_it_back(tiny_stack):
    stack, events = tiny_stack
    sup = stack.supervisor
    # WHEN a test stops a process of a supervised stack
    stack.stop_process("loads")
    sup.clock = MonotonicClock(start=10_000.0)  # long after any backoff
    for _ in range(3):
        sup.tick()
    # THEN the supervisor leaves it down
    assert not stack.processes["loads"].running()
    assert [r["state"] for r in stack.status()] == ["stopped", "running"]
    # AND start_process brings it back, supervised again
    stack.start_process("loads")
    assert stack.processes["loads"].running() and sup.status()["loads"]["state"] == "running"
    assert events == []


def test_relay_ps_stop_start_restart_talk_to_the_running_stack(tiny_stack, monkeypatch):
    stack, events = tiny_stack
    monkeypatch.setattr(cli, "STATE_DIR", stack.state_dir)
    run = CliRunner().invoke
    first_pid = stack.processes["replay"].pid

    r = run(cli.app, ["stop", "loads"])
    assert r.exit_code == 0 and "loads stopped" in r.output
    assert not stack.processes["loads"].running()
    stack.supervisor.tick()
    assert not stack.processes["loads"].running()

    r = run(cli.app, ["ps"])
    assert r.exit_code == 0
    lines = {line.split()[0]: line.split() for line in r.output.splitlines()[1:]}
    assert lines["loads"][1:3] == ["stopped", "-"]
    assert lines["replay"][1:3] == ["running", str(first_pid)]

    r = run(cli.app, ["start", "loads"])
    assert r.exit_code == 0 and "loads started" in r.output
    assert stack.processes["loads"].running()
    r = run(cli.app, ["start", "loads"])
    assert r.exit_code == 0 and "already running" in r.output

    r = run(cli.app, ["restart", "replay"])
    assert r.exit_code == 0 and stack.processes["replay"].pid != first_pid

    r = run(cli.app, ["stop", "nosuch"])
    assert r.exit_code == 1 and "no process named 'nosuch'" in r.output
    assert events[0] == "loads stopped by `relay stop`; it stays down until `relay start loads`"
    assert (stack.state_dir / "logs" / "supervisor.log").read_text().count("relay start") == 2
