"""relay.emf: the local EMF extraction over the processes' log files.

Sample lines are the ones module_kit.metrics writes (Powertools' EMF provider), mixed with
the ordinary JSON and plain log lines the same files carry.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from module_kit import metrics
from relay.emf import EmfReader, collect, percentile


def emf_lines(service: str, name: str, values: list[float], unit: str = "Count", **labels) -> str:
    out = io.StringIO()
    writer = metrics.ModuleMetrics(service, stream=out)
    for value in values:
        writer.emit(name, value, unit, labels)
    return out.getvalue()


def append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as f:
        f.write(data)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    out = tmp_path / "logs"
    out.mkdir()
    return out


def series_of(snapshot: dict, name: str) -> list[dict]:
    return [s for s in snapshot["series"] if s["name"] == name]


def test_counters_are_summed_per_dimension_set_and_in_total(logs):
    # GIVEN two processes' logs with counters among ordinary log lines
    append(logs / "loads-cell-1.log", '{"level":"INFO","message":"request GET /loads"}\n')
    append(
        logs / "loads-cell-1.log", emf_lines("loads", metrics.EVENTS_APPLIED, [1, 1], via="live")
    )
    append(logs / "loads-cell-2.log", "INFO:     127.0.0.1 - GET /healthz 200\n")
    append(logs / "loads-cell-2.log", emf_lines("loads", metrics.EVENTS_APPLIED, [1], via="replay"))
    append(logs / "loads-cell-2.log", emf_lines("loads", metrics.EVENTS_APPLIED, [1], via="live"))
    # WHEN they are read
    snapshot = EmfReader(logs).poll()
    # THEN each via is its own series, summed across files, and the total sums them all
    applied = {
        s["dimensions"]["via"]: s["sum"] for s in series_of(snapshot, metrics.EVENTS_APPLIED)
    }
    assert applied == {"live": 3.0, "replay": 1.0}
    assert snapshot["totals"] == {metrics.EVENTS_APPLIED: 4.0}
    assert (snapshot["files"], snapshot["lines"], snapshot["skipped"]) == (2, 4, 0)
    assert series_of(snapshot, metrics.EVENTS_APPLIED)[0]["dimensions"]["service"] == "loads"


def test_observations_keep_count_sum_max_and_percentiles(logs):
    values = [float(v) for v in range(1, 101)]  # 1 .. 100 seconds
    append(logs / "loads.log", emf_lines("loads", metrics.ASSIGNMENT_SEEN_DELAY, values, "Seconds"))
    (delay,) = series_of(EmfReader(logs).poll(), metrics.ASSIGNMENT_SEEN_DELAY)
    assert delay["unit"] == "Seconds"
    assert (delay["count"], delay["sum"], delay["max"]) == (100, 5050.0, 100.0)
    assert (delay["p50"], delay["p90"], delay["p99"]) == (50.0, 90.0, 99.0)


def test_a_poll_reads_only_what_was_appended_since_the_last(logs):
    path = logs / "gatepass.log"
    reader = EmfReader(logs)
    append(path, emf_lines("gatepass", metrics.PASSES_ISSUED, [1, 1]))
    assert reader.poll()["totals"][metrics.PASSES_ISSUED] == 2.0
    assert reader.offsets[path] == path.stat().st_size
    # WHEN nothing is appended THEN nothing changes; WHEN one more THEN it adds one
    assert reader.poll()["totals"][metrics.PASSES_ISSUED] == 2.0
    append(path, emf_lines("gatepass", metrics.PASSES_ISSUED, [1]))
    assert reader.poll()["totals"][metrics.PASSES_ISSUED] == 3.0


def test_a_line_still_being_written_is_counted_once_it_is_whole(logs):
    path = logs / "notifications.log"
    line = emf_lines("notifications", metrics.NOTIFICATIONS_DELIVERED, [1]).encode()
    reader = EmfReader(logs)
    # GIVEN half a line on disk
    append(path, line[:40])
    assert reader.poll()["totals"] == {}
    assert reader.offsets[path] == 0
    # WHEN the rest arrives THEN the whole line counts, once
    append(path, line[40:])
    snapshot = reader.poll()
    assert snapshot["totals"] == {metrics.NOTIFICATIONS_DELIVERED: 1.0}
    assert snapshot["skipped"] == 0


def test_a_file_that_shrank_is_read_again_from_its_start(logs):
    path = logs / "message.log"
    reader = EmfReader(logs)
    append(path, emf_lines("message", metrics.NOTIFICATIONS_ENQUEUED, [1, 1, 1]))
    assert reader.poll()["totals"][metrics.NOTIFICATIONS_ENQUEUED] == 3.0
    path.write_text(emf_lines("message", metrics.NOTIFICATIONS_ENQUEUED, [1]))  # a new stack
    assert reader.poll()["totals"][metrics.NOTIFICATIONS_ENQUEUED] == 4.0


def test_broken_emf_is_skipped_and_counted_not_fatal(logs):
    good = emf_lines("loads", metrics.ASSIGNMENTS_CREATED, [1])
    broken = json.loads(good)
    del broken[metrics.ASSIGNMENTS_CREATED]  # the directive names a value the line lacks
    append(logs / "loads.log", '{"_aws": not json\n' + json.dumps(broken) + "\n" + good)
    snapshot = EmfReader(logs).poll()
    assert snapshot["skipped"] == 2
    assert snapshot["totals"] == {metrics.ASSIGNMENTS_CREATED: 1.0}


def test_a_huge_file_is_caught_up_over_several_polls(logs):
    path = logs / "loads.log"
    one = emf_lines("loads", metrics.ASSIGNMENTS_CREATED, [1])
    append(path, one * 10)
    reader = EmfReader(logs, max_read_bytes=len(one) * 4)
    totals = [reader.poll()["totals"][metrics.ASSIGNMENTS_CREATED] for _ in range(3)]
    assert totals == [4.0, 8.0, 10.0]


def test_collect_keeps_one_reader_per_directory(logs, tmp_path):
    append(logs / "loads.log", emf_lines("loads", metrics.ASSIGNMENTS_CREATED, [1]))
    assert collect(logs)["totals"] == {metrics.ASSIGNMENTS_CREATED: 1.0}
    append(logs / "loads.log", emf_lines("loads", metrics.ASSIGNMENTS_CREATED, [1]))
    assert collect(logs)["totals"] == {metrics.ASSIGNMENTS_CREATED: 2.0}, "not read twice"
    assert collect(tmp_path / "missing")["series"] == []


def test_the_snapshot_is_small_and_json():
    snapshot = EmfReader(Path("/nonexistent")).poll()
    assert set(snapshot) == {"updated_at", "files", "lines", "skipped", "totals", "series"}
    json.dumps(snapshot)


def test_percentile_is_nearest_rank():
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
