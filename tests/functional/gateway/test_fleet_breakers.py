"""Breakers across the fleet on the control table (moto in-process): the store's
conditional writes, and the unit tier's fleet scenarios (8 ``create_app`` instances
round-robin) on ``ControlTableBreakers`` instead of the in-memory store."""

from __future__ import annotations

import pytest

from gateway.resilience.breaker import BreakerState
from gateway.resilience.fleet import ControlTableBreakers
from tests.functional.conftest import CONTROL_TABLE as TABLE
from tests.unit.gateway.test_fleet_breakers import (
    FAIL_MAX,
    INSTANCES,
    black_hole_outage,
    build_fleet,
)

pytestmark = pytest.mark.anyio
NOW = 1_795_000_000.0


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def store(control_dynamodb) -> ControlTableBreakers:
    return ControlTableBreakers(TABLE, dynamodb=control_dynamodb)


def test_an_opening_in_force_is_never_replaced_by_another_opener(store):
    assert store.open("loads", "gw-1", NOW, NOW + 10, "5 failures", reopen=False)
    # a concurrent opener loses: the first opening stays, no flapping
    assert not store.open("loads", "gw-2", NOW + 1, NOW + 11, "5 failures", reopen=False)
    record = store.load()["loads"]
    assert (record.opened_by, record.opened_at, record.until) == ("gw-1", NOW, NOW + 10)
    item = store.table.get_item(Key={"kind": "breaker", "name": "loads"})["Item"]
    assert item["expires_at"] > NOW + 10  # DynamoDB's TTL removes it in the end


def test_one_probe_lease_per_period_and_only_its_holder_reopens(store):
    store.open("loads", "gw-1", NOW, NOW + 10, "5 failures", reopen=False)
    assert not store.lease_probe("loads", "gw-2", NOW, NOW + 5, NOW + 15)  # not yet over
    assert store.lease_probe("loads", "gw-2", NOW, NOW + 10, NOW + 20)
    assert not store.lease_probe("loads", "gw-3", NOW, NOW + 11, NOW + 21)  # gw-2 holds it
    assert not store.open("loads", "gw-3", NOW + 11, NOW + 21, "mine", reopen=False)
    # the holder's failed probe opens it again for another period, lease released
    assert store.open("loads", "gw-2", NOW + 12, NOW + 22, "the probe failed", reopen=True)
    record = store.load()["loads"]
    assert (record.opened_by, record.opened_at, record.probe_by) == ("gw-2", NOW + 12, None)


def test_a_close_ends_only_the_opening_it_probed(store):
    store.open("loads", "gw-1", NOW, NOW + 10, "5 failures", reopen=False)
    assert not store.close("loads", NOW - 30)  # an older opening's prober
    assert store.close("loads", NOW)
    assert store.load() == {}


def test_the_failure_count_adds_up_and_starts_again_when_old_or_reset(store):
    assert [store.add_failure("loads", NOW + i, 10).failures for i in range(3)] == [1, 2, 3]
    assert store.add_failure("loads", NOW + 30, 10).failures == 1  # the last one too old
    store.reset_failures("loads", NOW + 31)
    assert store.load()["loads"].failures == 0
    assert store.add_failure("loads", NOW + 32, 10).failures == 1


async def test_eight_instances_on_the_control_table_open_together(settings, store):
    fleet = build_fleet(settings, store)
    waited = await black_hole_outage(fleet)
    assert FAIL_MAX <= waited <= 2 * FAIL_MAX  # alone: 8 x fail_max (tests/unit)
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES
    opened = fleet.opened_at()
    assert max(opened) - min(opened) <= 2.0
    assert store.load()["loads"].reason == "5 failures in a row across the fleet"


async def test_in_lambda_mode_the_fleet_opens_after_its_fail_max_too(settings, store):
    # requests alone refresh (Lambda), waiting for a due refresh: each other instance's
    # first request after the opening fails fast (before: fail_max + 7 waited)
    fleet = build_fleet(settings, store, idle_refresh=False)
    assert await black_hole_outage(fleet) == FAIL_MAX
    assert fleet.states() == [BreakerState.OPEN] * INSTANCES
    assert all(f.store_errors == {} for f in fleet.fleets)


async def test_after_recovery_one_probe_closes_the_whole_fleet(settings, store):
    fleet = build_fleet(settings, store, reset_timeout=5.0)
    await black_hole_outage(fleet, requests=2 * INSTANCES)
    fleet.module.black_hole = False
    fleet.mono.advance(5.0)
    fleet.wall.advance(5.0)
    for _ in range(3 * INSTANCES):
        await fleet.request()
    assert len([b for b in fleet.breakers if b.transitions["open->half-open"]]) == 1
    assert fleet.states() == [BreakerState.CLOSED] * INSTANCES
    assert store.load() == {}
