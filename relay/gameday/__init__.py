"""Game days as Chaos Toolkit experiments (``gamedays/*.json``), run by ``relay gameday``.

Each experiment injects one fault through the running stack (a gateway fault, a process
killed, stopped or frozen), runs a bounded synthetic load of drivers, a dispatcher and a
gate against the gateway meanwhile, undoes the fault, and checks the invariants; the runner
reads each journal and writes the failure-mode matrix (docs/gamedays.md).
"""

from .journal import Verdict, read
from .outcome import Call, Function, Outcome, Tally, classify
from .runner import Scenario, ScenarioError, main, run, scenarios, select

__all__ = [
    "Call",
    "Function",
    "Outcome",
    "Scenario",
    "ScenarioError",
    "Tally",
    "Verdict",
    "classify",
    "main",
    "read",
    "run",
    "scenarios",
    "select",
]
