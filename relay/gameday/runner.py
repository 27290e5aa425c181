"""``relay gameday``: run game days (Chaos Toolkit experiments in ``gamedays/``), judge each
by its journal, and write the report.

By default each scenario runs on a stack of the runner's own (a supervised LocalStack in a
temporary state directory, one per stack shape: the cell scenario needs two loads cells),
so ``make gameday`` needs nothing running and no network beyond 127.0.0.1. With
``running=True`` the scenarios act on the stack already running (``make dev``), found by
its state directory, as ``chaos run gamedays/<scenario>.json`` does.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.cloud import ROOT

from . import journal, report, session
from .journal import Verdict
from .target import STATE_DIR_KEY, Target, state_dir_from

SCENARIO_DIR = ROOT / "gamedays"
SHORT_SECONDS = 4.0  # --short: the fault held this long (the CI smoke run)
FULL_SECONDS = 20.0
SETTLE_SECONDS = 60.0
ALL = "all"
OWN_JOURNALS = ROOT / ".relay" / "gamedays"  # the journals of runs on the runner's own stacks
log = logging.getLogger("relay.gameday")


class ScenarioError(Exception):
    """No such scenario, or a scenario file that is not a game day."""


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    experiment: dict[str, Any]

    @property
    def relay(self) -> dict[str, Any]:
        for ext in self.experiment.get("extensions", []):
            if ext.get("name") == "relay":
                return dict(ext)
        raise ScenarioError(f"{self.path}: no 'relay' extension")

    @property
    def cells(self) -> int | None:
        """The loads cells the scenario needs (None: it runs on any stack)."""
        cells = self.relay.get("cells")
        return None if cells is None else int(cells)

    @property
    def title(self) -> str:
        return str(self.experiment.get("title", self.name))


def scenarios(directory: Path = SCENARIO_DIR) -> dict[str, Scenario]:
    out = {}
    for path in sorted(directory.glob("*.json")):
        out[path.stem] = Scenario(path.stem, path, json.loads(path.read_text()))
    return out


def select(names: Sequence[str], directory: Path = SCENARIO_DIR) -> list[Scenario]:
    known = scenarios(directory)
    if not names or ALL in names:
        return list(known.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ScenarioError(
            f"no scenario {', '.join(unknown)}; the scenarios are: all, {', '.join(known)}"
        )
    return [known[n] for n in names]


def prepare(scenario: Scenario, state_dir: Path, seconds: float, settle: float) -> dict[str, Any]:
    """The experiment as it will run: its configuration pinned to this stack and timing."""
    experiment = copy.deepcopy(scenario.experiment)
    experiment["configuration"] = {
        **experiment.get("configuration", {}),
        STATE_DIR_KEY: str(state_dir),
        session.SECONDS_KEY: str(seconds),
        session.SETTLE_KEY: str(settle),
    }
    return experiment


def run_one(
    scenario: Scenario,
    state_dir: Path,
    seconds: float,
    settle: float,
    journal_dir: Path | None = None,
) -> Verdict:
    """Run one experiment with chaostoolkit-lib; keep its journal (``<journal_dir>/<name>
    .journal.json``, by default in the stack's state directory); judge it."""
    from chaoslib.experiment import run_experiment  # type: ignore[import-untyped]

    session.forget(scenario.name)
    experiment = prepare(scenario, state_dir, seconds, settle)
    result = run_experiment(experiment, settings={"runtime": {"rollbacks": {"strategy": "always"}}})
    journals = journal_dir or state_dir / "gamedays"
    journals.mkdir(parents=True, exist_ok=True)
    (journals / f"{scenario.name}.journal.json").write_text(
        json.dumps(result, indent=2, default=str)
    )
    return journal.read(result, scenario.name)


def _own_stack(cells: int, state_dir: Path) -> Any:
    from relay.stack import LocalStack, free_port

    return LocalStack(
        gateway_port=free_port(),
        state_dir=state_dir,
        cells=cells,
        supervise=True,
        event_source_backoff=(1, 5),
    )


def run(
    names: Sequence[str],
    *,
    short: bool = False,
    running: bool = False,
    say: Callable[[str], None] = print,
) -> list[Verdict]:
    chosen = select(names)
    seconds = SHORT_SECONDS if short else FULL_SECONDS
    verdicts: dict[str, Verdict] = {}
    if running:
        state_dir = state_dir_from(None)
        cells = len(Target.find({STATE_DIR_KEY: str(state_dir)}).cells) or 1
        for scenario in chosen:
            if scenario.cells not in (None, cells):
                say(f"{scenario.name}: skipped (needs a stack with {scenario.cells} loads cells)")
                continue
            verdicts[scenario.name] = _run_said(scenario, state_dir, seconds, say)
        return list(verdicts.values())
    # one stack per shape needed; the scenarios that run on any stack join the first
    shapes = sorted({s.cells for s in chosen if s.cells is not None}) or [1]
    for cells in shapes:
        group = [s for s in chosen if s.cells == cells or (s.cells is None and cells == shapes[0])]
        with tempfile.TemporaryDirectory(prefix="relay-gameday-") as tmp:
            say(f"starting a stack ({cells} loads cell{'s' if cells > 1 else ''}) ...")
            with _own_stack(cells, Path(tmp)) as stack:
                say(f"stack up in {stack.start_seconds:.0f} s at {stack.gateway_url}")
                for scenario in group:
                    verdicts[scenario.name] = _run_said(
                        scenario, Path(tmp), seconds, say, OWN_JOURNALS
                    )
    return [verdicts[s.name] for s in chosen if s.name in verdicts]


def _run_said(
    scenario: Scenario,
    state_dir: Path,
    seconds: float,
    say: Callable[[str], None],
    journal_dir: Path | None = None,
) -> Verdict:
    say(f"{scenario.name}: {scenario.title} ...")
    started = time.monotonic()
    verdict = run_one(scenario, state_dir, seconds, SETTLE_SECONDS, journal_dir)
    cells = "; ".join(
        f"{f.value} {t.cell()}" + (f" [{t.unusual()}]" if t.unusual() else "")
        for f, t in report.tallies(verdict).items()
        if t.total
    )
    say(
        f"{scenario.name}: {'pass' if verdict.ok else 'FAIL'} in {time.monotonic() - started:.0f} s"
        f" ({cells})"
    )
    for problem in verdict.problems:
        say(f"  {problem}")
    for function, t in report.tallies(verdict).items():
        for status, detail in t.examples.items():
            say(f"  {function.value} {status}: {detail}")
    return verdict


def write_report(
    verdicts: Sequence[Verdict],
    path: Path,
    *,
    command: str,
    seconds: float,
    wall_seconds: float | None,
    load_average: tuple[float, float] | None = None,
    tree: str | None = None,
) -> tuple[Path, Path]:
    """``tree``: the source version the game days ran (by default, the tree's now)."""
    from relay.stack import source_version

    chart = path.with_suffix(".svg")
    run = report.Run(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        tree=tree or source_version(ROOT),
        command=command,
        seconds=seconds,
        wall_seconds=wall_seconds,
        load_average=load_average,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.write_text(report.svg(verdicts))
    path.write_text(report.markdown(verdicts, run, chart.name))
    return path, chart


def main(names: Sequence[str], *, short: bool, running: bool, report_path: Path | None) -> int:
    """The command: run, say each verdict, write the report; 0 only if every scenario passed."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from relay.stack import source_version

    started, load_before, tree = time.monotonic(), os.getloadavg()[0], source_version(ROOT)
    verdicts = run(names, short=short, running=running)
    wall = time.monotonic() - started
    if report_path is not None:
        command = "relay gameday " + " ".join([*(names or [ALL]), *(["--short"] if short else [])])
        md, chart = write_report(
            verdicts,
            report_path,
            command=command,
            seconds=SHORT_SECONDS if short else FULL_SECONDS,
            wall_seconds=wall,
            load_average=(load_before, os.getloadavg()[0]),
            tree=tree,
        )
        print(f"report: {md} and {chart}")
    failed = [v.scenario for v in verdicts if not v.ok]
    print(
        f"{len(verdicts) - len(failed)} of {len(verdicts)} game days passed in {wall:.0f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed or not verdicts else 0
