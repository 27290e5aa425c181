"""What ``relay deploy`` shows while a release runs, and the table it prints at the end.

On a terminal, a live table (rich) with one row per step, updated at every tick; anywhere
else (CI logs, a pipe), one plain line per tick with no escape codes. Both show, per
version, the calls, success rate and p99 over the step's window, and the verdict.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

from .analysis import Numbers, Verdict
from .controller import Outcome, Progress

if TYPE_CHECKING:
    from rich.live import Live
    from rich.table import Table

    from .cells import CelledOutcome
    from .plan import PlanOutcome

SUMMARY_COLUMNS = (
    "step",
    "weight",
    "window",
    "stable calls",
    "stable ok",
    "stable p99",
    "canary calls",
    "canary ok",
    "canary p99",
    "verdict",
)


def progress_line(progress: Progress) -> str:
    """One tick as one plain line."""
    elapsed = progress.window_end - progress.window_start
    return (
        f"{progress.module} step {progress.step + 1}/{len(progress.steps)} "
        f"weight {progress.weight:g}% "
        f"[{elapsed:.0f}/{progress.interval_seconds:g} s] | "
        f"stable {progress.stable_version}: {_numbers(progress.stable)} | "
        f"canary {progress.canary_version}: {_numbers(progress.canary)} | "
        f"{progress.verdict.summary}"
    )


def _numbers(numbers: Numbers) -> str:
    return f"{numbers.calls} calls, {numbers.success_text()} ok, p99 {numbers.p99_text()}"


class ProgressDisplay:
    """The ``on_progress`` of a controller: a live table on a terminal, plain lines
    elsewhere. Use as a context manager so the live table is closed cleanly.

    ``live`` forces one mode (None: a live table exactly when ``stream`` is a TTY)."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self._rows: dict[int, Progress] = {}
        self._live: Live | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._table(), console=Console(file=self.stream), auto_refresh=False)
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __call__(self, progress: Progress) -> None:
        if self._live is None:
            self.stream.write(progress_line(progress) + "\n")
            self.stream.flush()
            return
        if self._rows and next(iter(self._rows.values())).release_id != progress.release_id:
            self._rows.clear()
        self._rows[progress.step] = progress
        self._live.update(self._table(), refresh=True)

    def _table(self) -> Table:
        from rich.table import Table

        first = next(iter(self._rows.values()), None)
        title = (
            None
            if first is None
            else f"{first.module}: {first.stable_version} -> {first.canary_version}"
        )
        table = Table(title=title)
        for column in ("step", "weight", "window", "stable", "canary", "verdict"):
            table.add_column(column)
        for progress in self._rows.values():
            elapsed = progress.window_end - progress.window_start
            table.add_row(
                f"{progress.step + 1}/{len(progress.steps)}",
                f"{progress.weight:g}%",
                f"{elapsed:.0f}/{progress.interval_seconds:g} s",
                _numbers(progress.stable),
                _numbers(progress.canary),
                _styled(progress.verdict),
            )
        return table


def _styled(verdict: Verdict) -> str:
    from rich.markup import escape

    colour = {"pass": "green", "fail": "red", "wait": "yellow"}[verdict.kind]
    return f"[{colour}]{escape(verdict.summary)}[/{colour}]"


def summary_table(outcome: Outcome) -> str:
    """Every judged step of a release with both versions' numbers and the verdict, as a
    plain-text table, then the outcome; a baseline from an earlier window is marked *."""
    rows: list[tuple[str, ...]] = []
    footnotes: list[str] = []
    for judgement in outcome.judgements:
        verdict = judgement.verdict
        steps = len(outcome.release.steps) if outcome.release is not None else 0
        stable, marked = verdict.stable, ""
        if verdict.baseline_source == "earlier interval" and verdict.baseline is not None:
            stable, marked = verdict.baseline, "*"
        rows.append(
            (
                f"{judgement.step + 1}/{steps}" if steps else str(judgement.step + 1),
                f"{judgement.weight:g}%",
                f"{judgement.window_end - judgement.window_start:.0f} s",
                f"{stable.calls}{marked}",
                stable.success_text() + marked,
                stable.p99_text() + marked,
                str(verdict.canary.calls),
                verdict.canary.success_text(),
                verdict.canary.p99_text(),
                verdict.summary,
            )
        )
        if marked and not footnotes:
            footnotes.append("* stable's last window with enough calls (none on it this step)")
    lines = _columns([SUMMARY_COLUMNS, *rows]) if rows else ["(no step was judged)"]
    lines += footnotes
    result = "PROMOTED" if outcome.promoted else "NOT PROMOTED"
    lines.append(f"{outcome.module} {outcome.release_id}: {result}: {outcome.reason}")
    return "\n".join(lines)


def plan_summary(outcome: PlanOutcome) -> str:
    """One line per stage of a plan: promoted, rolled back, or not run."""
    rows: list[tuple[str, ...]] = [("stage", "module", "result", "reason")]
    for number, stage in enumerate(outcome.stages, start=1):
        reason = stage.outcome.reason if stage.outcome is not None else ""
        rows.append((str(number), stage.module, stage.status, reason))
    return "\n".join(_columns(rows))


def cells_summary(outcome: CelledOutcome) -> str:
    """One line per cell of a celled module's release: its result (promoted and gated,
    already on the version, rolled back, reverted after its gate, not reverted, not run),
    the gate's looks and why; then the module's outcome."""
    rows: list[tuple[str, ...]] = [("cell", "unit", "result", "gate", "reason")]
    for number, cell in enumerate(outcome.cells, start=1):
        gate = ""
        if cell.gate is not None:
            gate = f"{'passed' if cell.gate.passed else 'failed'} ({cell.gate.samples} looks)"
        rows.append((f"{number}/{len(outcome.cells)}", cell.unit, cell.status, gate, cell.reason))
    result = "PROMOTED" if outcome.promoted else "NOT PROMOTED"
    return "\n".join([*_columns(rows), f"{outcome.module}: {result}: {outcome.reason}"])


def _columns(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines
