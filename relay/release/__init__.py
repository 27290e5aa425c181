"""Canary releases of one module or several, from the operator's side: the policy, the
analysis of canary against stable, the controller that steps the weights, the plan of
staged releases and the progress display. The gateway's side (release state, routing and
per-version stats) lives in ``gateway.release``."""

from .analysis import Numbers, Verdict, judge
from .controller import Judgement, Outcome, Progress, ReleaseController
from .exceptions import PlanError, PolicyError, ReleaseError
from .plan import (
    Plan,
    PlanEvent,
    PlanOutcome,
    Stage,
    StageOutcome,
    load_plan,
    parse_plan,
    run_plan,
)
from .policy import Policy

__all__ = [
    "Judgement",
    "Numbers",
    "Outcome",
    "Plan",
    "PlanError",
    "PlanEvent",
    "PlanOutcome",
    "Policy",
    "PolicyError",
    "Progress",
    "ReleaseController",
    "ReleaseError",
    "Stage",
    "StageOutcome",
    "Verdict",
    "judge",
    "load_plan",
    "parse_plan",
    "run_plan",
]
