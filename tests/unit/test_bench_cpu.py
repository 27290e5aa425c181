"""The benchmark's CPU reading: what --baseline judges a before/after change on."""

from __future__ import annotations

import os
import time

from bench.harness import process_cpu_seconds


def test_process_cpu_seconds_counts_the_work_a_process_did() -> None:
    before = process_cpu_seconds([os.getpid()])
    busy_until = time.process_time() + 0.2
    while time.process_time() < busy_until:
        pass
    assert process_cpu_seconds([os.getpid()]) - before >= 0.15


def test_a_process_that_is_gone_counts_nothing() -> None:
    assert process_cpu_seconds([2**22 + 12345]) == 0.0
