"""`relay deploy` as a module team runs it, against a supervised local stack (what
`relay dev` runs): a version of message from a directory is promoted with a progress display
and a summary table (exit 0) while the other routes keep answering without an error; a
version that fails every call is rolled back (exit 1); a git ref is checked out with git
worktree and runs as its own version."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay import demo
from relay.cloud import ROOT
from relay.release.deploy import resolve_source
from relay.release.faulty import fails, faulty_version, source_copy
from relay.stack import LocalStack, free_port
from tests.integration.conftest import Api, run_relay, wait_until

CLI_TIMEOUT_SECONDS = 180
# Short steps for a test: judged at 50%, then promoted; p99 compared once both versions
# have 100 calls, and only a p99 100 ms above the stable one's counts (loopback noise).
FAST = [
    "--steps", "50,100", "--interval", "2", "--min-calls", "10", "--rate", "80",
    "--set", "min_p99_delta_ms=100",
]  # fmt: skip
OTHER_ROUTES = ["/loads", "/gatepass", "/navigate?load_id=L-5001&lat=41.88&lon=-87.63"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        supervise=True,
    ) as s:
        yield s


def relay(stack: LocalStack, *args: str) -> subprocess.CompletedProcess:
    return run_relay(stack, *args, timeout=CLI_TIMEOUT_SECONDS)


def message_version(tmp: Path, name: str, fault: str = "") -> Path:
    return faulty_version(tmp / name, "message", fault) if fault else source_copy(tmp / name, name)


class OtherRoutes:
    """A demo driver's reads of every other module, for as long as the release runs."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.statuses: Counter[str] = Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        auth = self.api.auth(driver_id=demo.DRIVERS[0])
        with httpx.Client(base_url=self.api.stack.gateway_url, timeout=10) as client:
            n = 0
            while not self.stop.wait(0.1):
                path = OTHER_ROUTES[n % len(OTHER_ROUTES)]
                n += 1
                try:
                    r = client.get(path, headers=auth)
                    self.statuses[f"{path.split('?')[0]} {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    self.statuses[f"{path} {type(exc).__name__}"] += 1

    def __enter__(self) -> OtherRoutes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)


def synthetic_statuses(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("synthetic traffic:"))


def test_a_good_version_is_promoted_while_the_other_routes_keep_answering(stack, api, tmp_path):
    tree = message_version(tmp_path, "good")
    before = stack.module_url("message")
    with OtherRoutes(api) as others:
        done = relay(stack, "deploy", "message", "--ref", str(tree), *FAST)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "contract kept" in out
    assert "message step 1/2" in out  # the progress lines (no TTY: one line per tick)
    assert "canary calls" in out and "verdict" in out  # the summary table
    assert "PROMOTED" in out
    assert synthetic_statuses(out).startswith("synthetic traffic: {'200': ")
    assert stack.module_url("message") != before  # the new process is message now
    # nothing else restarted, and the other routes never failed during the release
    assert others.statuses and all(k.endswith(" 200") for k in others.statuses), others.statuses
    r = api.http.get("/message", headers=api.auth(driver_id=demo.DRIVERS[0]))
    assert r.status_code == 200


def test_a_version_failing_every_call_is_rolled_back_with_exit_1(stack, api, tmp_path):
    tree = message_version(tmp_path, "broken", fails(1.0))
    before = stack.module_url("message")
    done = relay(stack, "deploy", "message", "--ref", str(tree), *FAST)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ROLLED BACK" in done.stdout and "below the floor" in done.stdout
    # its drivers' reads were answered by the stable version: only 200s
    assert "'200'" in synthetic_statuses(done.stdout)
    assert "'5" not in synthetic_statuses(done.stdout)
    assert stack.module_url("message") == before
    assert not [name for name in stack.processes if name.startswith("message@")]


def test_a_git_ref_is_checked_out_once_into_a_worktree(tmp_path):
    versions = tmp_path / "versions"
    source = resolve_source("HEAD", repo=ROOT, versions_dir=versions)
    again = resolve_source("HEAD", repo=ROOT, versions_dir=versions)
    assert source == again and source.path.parent == versions.resolve()
    assert (source.path / "modules" / "message" / "app.py").exists()
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert source.version == head
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source.path)], check=True
    )
    with pytest.raises(ValueError, match="neither a directory nor a git ref"):
        resolve_source("no-such-ref-anywhere", repo=ROOT, versions_dir=versions)


def test_relay_rollback_says_when_nothing_is_running(stack):
    done = relay(stack, "rollback", "navigate", "--reason", "nothing is running")
    assert done.returncode == 1 and "has no release running" in done.stdout


def interrupted_deploy(stack, tree: Path, api: Api) -> str:
    """A `relay deploy` stopped mid-release (a closed terminal): the running release's id."""
    from gateway.release.state import ControlTableReleases

    table = stack.function_env("GatewayFunction")["RELAY_CONTROL_TABLE"]
    store = ControlTableReleases(table, dynamodb=api.aws_resource("dynamodb"))
    before = store.get("message")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay.cli", "deploy", "message", "--ref", str(tree),
         "--steps", "50,100", "--interval", "600", "--no-traffic"],
        cwd=ROOT,
        env={**os.environ, "RELAY_STATE_DIR": str(stack.state_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_until(
            lambda: (
                (r := store.get("message")) is not None and r.phase == "running" and r != before
            ),
            timeout=60,
        )
    finally:
        proc.kill()
        proc.wait(10)
    running = store.get("message")
    assert running is not None
    return running.release_id


def test_a_release_whose_deploy_stopped_is_resumed_or_rolled_back(stack, api, tmp_path):
    first = interrupted_deploy(stack, message_version(tmp_path, "resumed"), api)
    done = relay(stack, "deploy", "message", "--resume", *FAST[2:])
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming release {first}" in done.stdout and "PROMOTED" in done.stdout

    second = interrupted_deploy(stack, message_version(tmp_path, "abandoned"), api)
    assert [n for n in stack.processes if n.startswith("message@")]  # its canary runs
    done = relay(stack, "rollback", "message", "--reason", "the deploy was interrupted")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"release {second} rolled back to 0%" in done.stdout
    assert not [n for n in stack.processes if n.startswith("message@")]  # and is stopped
