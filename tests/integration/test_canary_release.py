"""Canary releases on the real local stack: a new version of loads runs beside the stable
one (its own process, built from a directory), its contract is checked before traffic, a
sticky share of synthetic drivers moves to it, and the controller judges it against the
stable version over the same seconds: a good version is promoted; one that fails 30% of
its calls, or is 3x slower, is rolled back while every driver's request is still answered;
one that breaks its contract never gets traffic; a gateway restarted mid-release routes
as before. Short intervals keep it to about a minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from gateway.release.router import on_canary
from gateway.release.state import ControlTableReleases, Release
from gateway.release.stats import ControlTableStats
from relay import demo
from relay.release.controller import Progress
from relay.release.deploy import Source, contract_check, deploy, directory_version
from relay.release.faulty import fails, faulty_version, slower, source_copy
from relay.release.hosts import LocalStackHost
from relay.release.policy import Policy
from relay.release.traffic import SyntheticTraffic
from relay.stack import LocalStack, free_port
from shared_contracts.identity import Role
from tests.integration.conftest import Api

# Loopback latencies here are tens of ms with a p99 that moves a bucket or two between
# windows (the emulator serializes DynamoDB): a canary is judged slower only when its p99 is
# 1.5x the stable one's and 100 ms above it (a busy CI host widens the noise); the slow
# version adds 250 ms to every call, at least 3x a stable p99 of tens of ms.
POLICY = Policy(
    steps=(50.0, 100.0),
    interval_seconds=5,
    min_calls=15,
    min_latency_calls=100,
    min_p99_delta_ms=100,
    tick_seconds=0.25,
)
LOADS_APP = Path("modules/loads/app.py")
RATE = 80.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(
        gateway_port=free_port(),
        state_dir=tmp_path_factory.mktemp("relay"),
        event_source_backoff=(1, 2),
        gateway_overrides={"RELAY_RATE_LIMIT_DISPATCH": "1000/1000"},
    ) as s:
        yield s


def version(tmp: Path, name: str, fault: str = "", change: tuple[str, str] | None = None) -> Source:
    """A copy of the modules' source tree, changed as a new version would be."""
    tree = faulty_version(tmp / name, "loads", fault) if fault else source_copy(tmp / name, name)
    if change is not None:
        app = tree / LOADS_APP
        text = app.read_text()
        assert change[0] in text
        app.write_text(text.replace(*change))
    return Source(tree, directory_version(tree))


class Rehearsal:
    """One deploy of loads with synthetic drivers reading through the gateway meanwhile."""

    def __init__(self, stack: LocalStack, api: Api) -> None:
        self.stack, self.api = stack, api
        dynamodb = api.aws_resource("dynamodb")
        table = stack.function_env("GatewayFunction")["RELAY_CONTROL_TABLE"]
        self.store = ControlTableReleases(table, dynamodb=dynamodb)
        self.stats = ControlTableStats(table, dynamodb=dynamodb)
        self.progress: list[Progress] = []
        self.first_failure_at: float | None = None
        self.on_first_progress: Callable[[], None] | None = None
        self.zero_at: float | None = None

    def token(self, driver: str) -> str:
        return self.api.tokens.mint(driver, Role.DRIVER, driver)

    def on_progress(self, progress: Progress) -> None:
        if not self.progress and self.on_first_progress is not None:
            self.on_first_progress()
        self.progress.append(progress)
        failing = progress.canary.failures > 0 or (
            progress.canary.p99_ms is not None
            and progress.stable.p99_ms is not None
            and progress.canary.p99_ms > 2 * progress.stable.p99_ms
        )
        if failing and self.first_failure_at is None:
            self.first_failure_at = time.time()

    def run(self, source: Source, policy: Policy = POLICY):
        with SyntheticTraffic(self.stack.gateway_url, ["loads"], self.token, rate=RATE) as load:
            result = deploy(
                "loads",
                source,
                host=LocalStackHost(self.stack),
                store=self.store,
                stats=self.stats,
                policy=policy,
                check=contract_check(self.stack.identity_private_key),
                on_progress=self.on_progress,
            )
        self.statuses = dict(load.statuses)
        return result


@pytest.fixture
def release(stack, api) -> Rehearsal:
    return Rehearsal(stack, api)


def loads_versions(stack: LocalStack) -> set[str]:
    return {name for name in stack.processes if name.startswith("loads@")}


def test_a_version_that_breaks_its_contract_gets_no_traffic(release, stack, tmp_path):
    renamed = version(
        tmp_path,
        "renamed-items",
        change=(
            "return LoadList(items=svc.list_for_driver(identity.driver))",
            "return {'loads': svc.list_for_driver(identity.driver)}  # type: ignore[return-value]",
        ),
    )
    renamed_app = renamed.path / LOADS_APP
    renamed_app.write_text(
        renamed_app.read_text().replace(
            '@app.get("/loads", response_model=LoadList,', '@app.get("/loads", response_model=None,'
        )
    )
    result = release.run(renamed)
    assert result.exit_code == 2 and result.outcome is None
    assert result.contract is not None
    assert any(p.operation == "GET /loads" for p in result.contract.problems)
    assert release.store.get("loads") is None  # no release was ever written: no traffic
    assert loads_versions(stack) == set()  # its process is stopped


def assign_loads(api: Api, drivers: list[str]) -> dict[str, str]:
    """A load for each driver (as dispatch assigns one): driver -> load id."""
    now = datetime.now(UTC)
    loads = {}
    for n, driver in enumerate(drivers):
        load_id = f"L-{8000 + n}"
        command = demo.assignment(load_id, driver, ["F-CHI", "F-IND"], now)
        r = api.http.post(
            "/dispatch/assignments",
            json=command.model_dump(mode="json"),
            headers=api.auth(Role.DISPATCH, None),
        )
        assert r.status_code == 201, r.text
        loads[driver] = load_id
    return loads


def report_arrivals(release: Rehearsal, loads: dict[str, str], answers: dict[str, list[int]]):
    """Each driver reports arriving at the first stop, then retries it with the same
    Idempotency-Key (a client that timed out), while the canary takes traffic."""
    with httpx.Client(base_url=release.stack.gateway_url, timeout=10) as client:
        for driver, load_id in loads.items():
            auth = {"authorization": f"Bearer {release.token(driver)}"}
            for _ in range(2):
                r = client.post(
                    f"/loads/{load_id}/events",
                    json={"kind": "arrived", "stop_seq": 1},
                    headers={**auth, "idempotency-key": f"arrive-{load_id}"},
                )
                answers.setdefault(driver, []).append(r.status_code)


def test_a_version_failing_30_percent_is_rolled_back_and_every_driver_is_answered(
    release, stack, api, tmp_path
):
    broken = version(tmp_path, "fails-30", fails(0.3))
    loads = assign_loads(api, [f"D-{n}" for n in range(9000, 9016)])
    answers: dict[str, list[int]] = {}
    writer = threading.Thread(target=report_arrivals, args=(release, loads, answers))
    release.on_first_progress = writer.start  # the writes go while the canary takes traffic
    result = release.run(broken)
    writer.join(60)
    assert result.exit_code == 1 and not result.promoted
    stored = release.store.get("loads")
    assert stored is not None and stored.phase == "rolled-back" and stored.weight == 0
    assert "success" in result.outcome.reason  # the evidence names the success rate
    assert stored.evidence and stored.evidence[-1]["verdict"] == "fail"
    # every synthetic driver's request was answered live (the stable version retried it)
    assert set(release.statuses) == {"200"}, release.statuses
    # rolled back within one interval of the canary taking traffic (and failing at once)
    assert release.first_failure_at is not None
    assert stored.updated_at - stored.started_at <= POLICY.interval_seconds
    assert loads_versions(stack) == set()
    assert api.http.get("/loads", headers=api.auth()).status_code == 200
    # every write was acknowledged, and applied once: one arrival each, whichever version
    # took it and however often the client retried
    assert answers and all(codes == [201, 201] for codes in answers.values()), answers
    for driver, load_id in loads.items():
        auth = {"authorization": f"Bearer {release.token(driver)}"}
        load = api.http.get(f"/loads/{load_id}", headers=auth).json()
        assert load["version"] == 2, load  # assigned, then arrived once
    at_first_step = replace(stored, weight=POLICY.steps[0])
    assert any(on_canary(at_first_step, d) for d in loads)  # some wrote to the failing canary


def test_a_version_three_times_slower_is_rolled_back_on_latency(release, stack, tmp_path):
    slow = version(tmp_path, "slow", slower(0.25))
    result = release.run(slow)
    assert result.exit_code == 1
    assert "p99" in result.outcome.reason
    assert set(release.statuses) == {"200"}, release.statuses
    assert loads_versions(stack) == set()


def test_a_good_version_is_promoted_and_serves_everyone(release, stack, api, tmp_path):
    good = version(tmp_path, "good")
    before = stack.module_url("loads")
    result = release.run(good)
    assert result.exit_code == 0 and result.promoted, result.outcome and result.outcome.reason
    assert {p.weight for p in release.progress} == {50.0}  # judged at 50%, then promoted
    stored = release.store.get("loads")
    assert stored is not None and stored.phase == "promoted"
    assert [e["verdict"] for e in stored.evidence] == ["pass"]
    assert stored.stable_version == good.version
    # the new process is loads now; the old one is stopped; no driver saw an error
    assert stack.module_url("loads") != before and loads_versions(stack) == set()
    assert set(release.statuses) == {"200"}, release.statuses
    assert api.http.get("/loads", headers=api.auth()).status_code == 200


def test_a_gateway_restarted_mid_release_routes_as_before(release, stack, api, tmp_path):
    patient = Policy(steps=(50.0, 100.0), interval_seconds=600, min_calls=10**6)
    source = version(tmp_path, "resume")
    url = stack.start_version("loads", source.path, source.version).url
    state = Release(
        module="loads",
        release_id="loads-restart-test",
        stable_version="stable",
        canary_version=source.version,
        canary_url=url,
        steps=patient.steps,
        weight=50.0,
        started_at=time.time(),
        updated_at=time.time(),
    )
    current = release.store.get("loads")
    stored = release.store.put(state, expected_revision=current.revision if current else None)
    assert stored is not None
    drivers = [f"D-{n}" for n in range(9000, 9040)]
    canary = [d for d in drivers if on_canary(stored, d)]
    assert canary and len(canary) < len(drivers)
    stack.restart_process("gateway")  # cold: its first copy comes from the control table
    for driver in drivers:
        auth = {"authorization": f"Bearer {release.token(driver)}"}
        r = api.http.get("/loads", headers=auth)
        assert r.status_code == 200, (driver in canary, r.text)
    ops = api.http.get("/ops/status", headers=api.auth(Role.OPS, None)).json()
    served = ops["versions_served"]
    assert served.get(f"loads@{source.version}") == len(canary)
    assert sum(served.values()) == len(drivers)
    done = replace(stored, weight=0.0, phase="rolled-back", updated_at=time.time())
    assert release.store.put(done, expected_revision=stored.revision) is not None
    stack.retire_version("loads", source.version)


def test_demo_drivers_keep_their_loads_throughout(api):
    for driver in demo.DRIVERS:
        r = api.http.get("/loads", headers=api.auth(driver_id=driver))
        assert r.status_code == 200 and r.json()["items"]
