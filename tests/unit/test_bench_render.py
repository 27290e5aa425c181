"""Rewriting docs/benchmarks.md (bench/run.py ``markdown``): a part whose figures are not on
this machine keeps its section from the report being replaced."""

from __future__ import annotations

from bench.run import kept_section, markdown

EARLIER = """# Benchmarks

## Run of 2026-12-03 23:01 UTC

Hop: 0.12x.

## Cells (run of 2026-12-04 09:19 UTC; 3 rounds)

### 10. Cells: instructions per forward

1.004x.

## Overload (run of 2026-12-05 00:01 UTC; 3 rounds)

Critical p99 10.45 ms.

## Before/after: this tree against a git ref

(none)
"""


def test_a_section_runs_from_its_heading_to_the_next_level_two_heading():
    assert kept_section(EARLIER, "Cells ") == [
        "## Cells (run of 2026-12-04 09:19 UTC; 3 rounds)",
        "",
        "### 10. Cells: instructions per forward",
        "",
        "1.004x.",
        "",
    ]
    assert kept_section(EARLIER, "Regions ") == []
    assert kept_section("", "Cells ") == []


def test_sections_without_figures_are_kept_from_the_report_replaced():
    # GIVEN no results files at all (a fresh clone): every part lacks its figures
    written = markdown(None, None, kept=EARLIER)

    # THEN the measured sections are the earlier report's, whole and in order
    for heading in ("Run of ", "Cells ", "Overload "):
        assert "\n".join(kept_section(EARLIER, heading)) in written
    assert written.index("## Run of") < written.index("## Cells") < written.index("## Overload")
    assert "## Regions" not in written  # never measured: nothing to keep


def test_without_an_earlier_report_no_measured_section_is_written():
    written = markdown(None, None)

    assert "## Run of" not in written and "## Overload" not in written
