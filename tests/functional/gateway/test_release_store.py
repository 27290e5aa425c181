"""Releases and their per-version stats on the control table (moto in-process): the
conditional writes that keep an operator's rollback, the history, and the fleet's counts
summed per second and read back over a window."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.release.state import ControlTableReleases, Release
from gateway.release.stats import ControlTableStats, VersionStats, bucket
from tests.functional.conftest import CONTROL_TABLE as TABLE

NOW = 1_795_000_000


@pytest.fixture
def dynamodb(control_dynamodb):
    return control_dynamodb


def release(**changes) -> Release:
    fields = {
        "module": "loads",
        "release_id": "loads-r1",
        "stable_version": "v1",
        "canary_version": "v2",
        "canary_url": "http://127.0.0.1:9/",
        "weight": 1.0,
        "started_at": NOW,
        "updated_at": NOW,
    }
    return Release(**(fields | changes))


def test_each_write_is_conditional_on_the_revision_it_read(dynamodb):
    store = ControlTableReleases(TABLE, dynamodb=dynamodb)
    first = store.put(release(), expected_revision=None)
    assert first is not None and first.revision == 1
    assert store.put(release(), expected_revision=None) is None  # one release per module
    # an operator rolls back; a controller still holding revision 1 cannot undo it
    rolled = store.put(replace(first, weight=0, phase="rolled-back"), expected_revision=1)
    assert rolled is not None and rolled.revision == 2
    assert store.put(replace(first, weight=10), expected_revision=1) is None
    assert store.get("loads") == rolled
    assert store.load() == {"loads": rolled}


def test_a_finished_release_is_kept_in_the_history(dynamodb):
    store = ControlTableReleases(TABLE, dynamodb=dynamodb)
    running = store.put(release(evidence=({"verdict": "pass"},)), expected_revision=None)
    assert running is not None and store.history("loads") == []
    done = store.put(replace(running, phase="promoted", weight=0), expected_revision=1)
    assert store.history("loads") == [done]
    assert store.history("loads")[0].evidence == ({"verdict": "pass"},)


def test_counts_from_many_instances_sum_per_second_and_read_back_by_window(dynamodb):
    store = ControlTableStats(TABLE, dynamodb=dynamodb)
    for instance in range(3):  # three gateway instances, the same seconds
        for second in range(NOW, NOW + 4):
            stats = VersionStats()
            stats.add(True, 10)
            stats.add(instance != 0, 300)
            store.add("loads-r1", "v2", second, stats)
    store.add("loads-r1", "v1", NOW, VersionStats(1, 0, {bucket(5): 1}))
    store.add("loads-r2", "v2", NOW, VersionStats(7, 7, {bucket(5): 7}))  # another release
    window = store.window("loads-r1", "v2", NOW + 1, NOW + 3)  # seconds NOW+1 and NOW+2
    assert (window.calls, window.failures) == (12, 2)
    assert window.histogram == {bucket(10): 6, bucket(300): 6}
    assert store.window("loads-r1", "v2", NOW, NOW + 4).calls == 24
    assert store.window("loads-r1", "v1", NOW, NOW + 4).calls == 1
    assert store.window("loads-r1", "v2", NOW + 4, NOW + 9).calls == 0
