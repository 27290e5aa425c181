"""``relay region``: which regions serve drivers, and the lever that moves them.

``relay region evacuate us-east-1 --reason "game day"`` turns the region's routing control
off: its hostname is answered by the other region (Route 53 failover records in AWS, the
local front door's nginx in ``relay dev --regions``), and its gateways send the requests
that still reach them to the other region's modules. ``restore`` turns it on again;
``show`` prints each region's control (who, why, when), the last changes and where each
hostname goes now.

Where the lever is written: the routing-control table (:mod:`gateway.regions.control`, a
global table every gateway reads), in the primary region's replica, or the next region's
when that one does not answer (a lever that needs the failing region is no lever). One
replica per change keeps the safety rule (at least one region serves) checked in one
transaction, so two operators evacuating both regions at once cannot both succeed. A change
the rule refuses writes nothing and exits 2.

With ``--target aws --stage S`` the table is the stage's (``relay-<S>-routing``), the
regions are the front door stack's (``relay-<S>-frontdoor``, frontdoor/template.yaml), and
a change also flips the region's Route 53 ARC routing control (Off to evacuate, On to
restore) through the cluster's regional endpoints, trying them in turn: any one of the
five answers, none of them is the control plane. The table is written first: its safety
rule refuses before anything moves, and if ARC then fails the command says so and running
it again finishes it (each step is a plain set of a state).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gateway.regions.control import (
    ControlConflict,
    RegionControl,
    RoutingControls,
    SafetyRuleError,
    serving,
)

from .cells import Target

log = logging.getLogger("relay.regions")

FRONTDOOR_STACK = "relay-{stage}-frontdoor"
# The ARC configuration API (describe-cluster) answers in us-west-2 only; the front door
# stack is deployed there (frontdoor/template.yaml).
ARC_CONFIG_REGION = "us-west-2"
ROUTING_TABLE = "relay-{stage}-routing"  # template.yaml, RoutingControlTable
AUDIT_SHOWN = 10
FRONTDOOR_WAIT_SECONDS = 10.0  # a local evacuation waits this long for the front door
# A replica that does not answer within these is skipped for the next region's.
CONNECT_TIMEOUT_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 2.0


class RegionsError(Exception):
    """A refused or failed ``relay region`` command; the message says why."""


@dataclass
class ArcControls:
    """Route 53 ARC's routing controls of a stage, one per region (ARNs), changed through
    the cluster's endpoints (``[(endpoint URL, its region)]``) in turn.
    ``client(endpoint, region)`` makes a ``route53-recovery-cluster`` client."""

    controls: dict[str, str]
    endpoints: list[tuple[str, str]]
    client: Callable[[str, str], Any]

    def set(self, region: str, on: bool) -> str:
        """Turn ``region``'s control On or Off; the endpoint that did it."""
        arn = self.controls.get(region)
        if arn is None:
            raise RegionsError(f"the front door has no routing control for {region}")
        errors = []
        for endpoint, endpoint_region in self.endpoints:
            try:
                self.client(endpoint, endpoint_region).update_routing_control_state(
                    RoutingControlArn=arn, RoutingControlState="On" if on else "Off"
                )
                return endpoint
            except Exception as exc:  # the next endpoint
                errors.append(f"{endpoint}: {type(exc).__name__}: {exc}")
        raise RegionsError(
            "no ARC cluster endpoint took the change:\n  " + "\n  ".join(errors or ["none"])
        )

    def states(self) -> dict[str, str]:
        """Each region's control state (On/Off), from the first endpoint that answers."""
        for endpoint, endpoint_region in self.endpoints:
            try:
                cluster = self.client(endpoint, endpoint_region)
                return {
                    region: str(
                        cluster.get_routing_control_state(RoutingControlArn=arn)[
                            "RoutingControlState"
                        ]
                    )
                    for region, arn in self.controls.items()
                }
            except Exception as exc:  # the next endpoint
                log.info("ARC endpoint %s did not answer: %r", endpoint, exc)
        return {}


def arc_controls(
    stage: str, *, cloudformation: Any, control_config: Any, client: Callable[[str, str], Any]
) -> tuple[list[str], ArcControls]:
    """The stage's regions (primary first) and its ARC routing controls, from the front
    door stack's parameters and outputs and its cluster's endpoints."""
    name = FRONTDOOR_STACK.format(stage=stage)
    try:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except Exception as exc:
        raise RegionsError(f"the front door stack {name} cannot be read: {exc}") from None
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])}
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    regions = [parameters["PrimaryRegion"], parameters["SecondaryRegion"]]
    controls = {
        regions[0]: outputs["PrimaryRoutingControlArn"],
        regions[1]: outputs["SecondaryRoutingControlArn"],
    }
    cluster = control_config.describe_cluster(ClusterArn=outputs["ClusterArn"])["Cluster"]
    endpoints = [(e["Endpoint"], e["Region"]) for e in cluster.get("ClusterEndpoints", [])]
    if not endpoints:
        raise RegionsError(f"the ARC cluster {outputs['ClusterArn']} lists no endpoint")
    return regions, ArcControls(controls, endpoints, client)


@dataclass
class Lever:
    """The routing controls of a stage: which regions, the replica written, ARC (AWS)."""

    regions: list[str]
    controls: RoutingControls
    replica: str  # the region whose replica is read and written
    arc: ArcControls | None = None
    frontdoor_state: Path | None = None  # the local front door's frontdoor.json
    notes: list[str] = field(default_factory=list)  # replicas skipped, and why

    def load(self) -> dict[str, RegionControl]:
        return self.controls.load()


def first_replica(
    table: str, regions: Sequence[str], resource: Callable[[str], Any]
) -> tuple[str, RoutingControls, list[str]]:
    """The first region (in ``regions``' order) whose replica of ``table`` answers: its
    name, its controls, and why the ones before it were skipped."""
    notes = []
    for region in regions:
        controls = RoutingControls(table, dynamodb=resource(region))
        try:
            controls.load()
        except Exception as exc:
            notes.append(f"{region}'s replica did not answer ({type(exc).__name__}: {exc})")
            continue
        return region, controls, notes
    raise RegionsError(
        f"no replica of {table} answers in {', '.join(regions)}:\n  " + "\n  ".join(notes)
    )


def _config() -> Any:
    """The kit's client settings (two attempts) with the lever's deadlines."""
    from module_kit.aws import client_config

    return client_config(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS)


def local_lever() -> Lever:
    """The running local stack's routing controls (its stack.json)."""
    import boto3

    from . import stack

    path = stack.STATE_DIR / "stack.json"
    if not path.exists():
        raise typer.BadParameter("the local stack is not running: start it with `make dev`")
    state = json.loads(path.read_text())
    table = state.get("routing_table")
    if not table:
        raise RegionsError(
            "the running stack has no routing-control table (restart `make dev` on this tree)"
        )
    regions = list(state.get("regions") or [stack.LOCAL_CREDENTIALS["AWS_REGION"]])
    session = boto3.session.Session(
        aws_access_key_id=stack.LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )

    def resource(region: str) -> Any:
        return session.resource(
            "dynamodb",
            region_name=region,
            endpoint_url=state["emulator_url"],
            config=_config(),
        )

    replica, controls, notes = first_replica(table, regions, resource)
    front = state.get("frontdoor_state")
    return Lever(regions, controls, replica, None, Path(front) if front else None, notes)


def aws_lever(stage: str) -> Lever:
    """A stage's routing controls in AWS, and its ARC routing controls."""
    import boto3

    from .release.aws import client_config, make_client

    regions, arc = arc_controls(
        stage,
        cloudformation=make_client("cloudformation", ARC_CONFIG_REGION),
        control_config=make_client("route53-recovery-control-config", ARC_CONFIG_REGION),
        client=lambda endpoint, region: boto3.client(
            "route53-recovery-cluster",
            region_name=region,
            endpoint_url=endpoint,
            config=client_config(),
        ),
    )
    replica, controls, notes = first_replica(
        ROUTING_TABLE.format(stage=stage),
        regions,
        lambda region: boto3.resource("dynamodb", region_name=region, config=_config()),
    )
    return Lever(regions, controls, replica, arc, None, notes)


def change(
    lever: Lever,
    region: str,
    *,
    evacuate: bool,
    who: str,
    why: str,
    say: Callable[[str], None],
) -> RegionControl:
    """Evacuate or restore ``region``: the routing-control table (the safety rule checked
    there, :class:`SafetyRuleError` if refused), then ARC's control when there is one."""
    pull = lever.controls.evacuate if evacuate else lever.controls.restore
    changed = pull(region, regions=lever.regions, who=who, why=why)
    say(
        f"{region}: {'evacuated' if evacuate else 'restored'} (revision {changed.revision}, "
        f"written to {lever.replica}'s replica)"
    )
    if lever.arc is not None:
        try:
            endpoint = lever.arc.set(region, on=not evacuate)
        except RegionsError as exc:
            raise RegionsError(
                f"the gateways' routing control of {region} is changed, but Route 53 ARC's is "
                f"not ({exc}); run the same command again"
            ) from None
        say(f"{region}: ARC routing control {'Off' if evacuate else 'On'} (via {endpoint})")
    return changed


def wait_for_frontdoor(
    state_file: Path,
    changed: RegionControl,
    *,
    timeout: float = FRONTDOOR_WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """The local front door's switch for ``changed`` (its ``changed_at`` is the change's
    time), once recorded in ``state_file``; None if none came within ``timeout``."""
    deadline = clock() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            view = json.loads(state_file.read_text())
            for switch in reversed(view.get("switches", [])):
                if switch.get("changed_at") is not None and (
                    abs(float(switch["changed_at"]) - changed.updated_at) < 1e-3
                ):
                    return dict(switch)
        if clock() >= deadline:
            return None
        sleep(0.05)


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- the command line (`relay region`, registered by relay.cli) ------------------------------

region_app = typer.Typer(
    help="The regions: which serve drivers, evacuating one and restoring it.",
    no_args_is_help=True,
)

RegionArg = Annotated[str, typer.Argument(help="The region, e.g. us-east-1")]
ReasonOpt = Annotated[str, typer.Option(help="Why (kept with the control and in the audit)")]
WhoOpt = Annotated[str | None, typer.Option(help="Who (default: your OS user)")]
TargetOpt = Annotated[
    Target, typer.Option(help="local: the running local stack; aws: a stage (its front door)")
]
StageOpt = Annotated[str | None, typer.Option(help="aws: the stage")]


def _lever(target: Target, stage: str | None) -> Lever:
    if target is Target.aws:
        if not stage:
            raise typer.BadParameter("required with --target aws", param_hint="--stage")
        return aws_lever(stage)
    if stage is not None:
        raise typer.BadParameter("only with --target aws", param_hint="--stage")
    return local_lever()


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """A refusal by the safety rule or a bad region: exit 2; any other failure: exit 1."""
    try:
        yield
    except (typer.Exit, typer.BadParameter):
        raise
    except (SafetyRuleError, ValueError) as exc:
        typer.echo(f"relay region: refused: {exc}", err=True)
        raise typer.Exit(2) from None
    except ControlConflict as exc:
        typer.echo(f"relay region: {exc}; nothing was written: run it again", err=True)
        raise typer.Exit(1) from None
    except RegionsError as exc:
        typer.echo(f"relay region: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # an AWS call, no region or credentials...
        typer.echo(f"relay region: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None


def _say(message: str) -> None:
    typer.echo(f"-- {message}")


@region_app.command("show")
def show(
    audit: Annotated[int, typer.Option(min=0, max=100, help="Audit entries shown")] = AUDIT_SHOWN,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """Each region's routing control (serving or evacuated; who, why, when), the last
    changes, and which region answers each hostname now."""
    with _reported():
        lever = _lever(target, stage)
        for note in lever.notes:
            typer.echo(f"({note})")
        controls = lever.load()
        typer.echo(f"regions (read from {lever.replica}'s replica):")
        typer.echo(f"  {'REGION':<14} {'STATE':<10} {'REV':>4}  {'WHEN':<23}  WHO / WHY")
        for region in lever.regions:
            control = controls.get(region, RegionControl(region))
            state = "serving" if serving(controls, region) else "EVACUATED"
            typer.echo(
                f"  {region:<14} {state:<10} {control.revision:>4}  "
                f"{_when(control.updated_at):<23}  "
                f"{control.updated_by or '-'} / {control.reason or '-'}"
            )
        if lever.arc is not None:
            states = lever.arc.states()
            typer.echo(
                "Route 53 ARC routing controls: "
                + (", ".join(f"{r} {s}" for r, s in states.items()) or "no endpoint answered")
            )
        if lever.frontdoor_state is not None:
            _show_frontdoor(lever.frontdoor_state)
        entries = lever.controls.audit(audit) if audit else []
        typer.echo(f"last changes ({len(entries)}, newest first):")
        for entry in entries:
            typer.echo(
                f"  {entry.at}  {entry.action:<8} {entry.region:<14} {entry.who} / {entry.why}"
            )


def _show_frontdoor(path: Path) -> None:
    from .frontdoor import read_state

    view = read_state(path.parent)
    if view is None:
        typer.echo("front door: no state yet")
        return
    typer.echo(f"front door ({view['url']}, configuration {view['generation']}):")
    for host, region in view.get("targets", {}).items():
        default = "  (the default: any other Host)" if host == view.get("default_hostname") else ""
        typer.echo(f"  {host:<30} -> {region}{default}")
    switches = view.get("switches", [])
    if switches:
        last = switches[-1]
        typer.echo(f"  last switch: {_switch_line(last)}")


def _switch_line(switch: dict[str, Any]) -> str:
    if not switch.get("ok"):
        return f"nginx did not reload (seen {_when(switch['seen_at'])})"
    parts = [f"nginx reloaded {_when(switch['reloaded_at'])}"]
    if switch.get("changed_at"):
        parts.append(
            f"{switch['reloaded_at'] - switch['changed_at']:.2f} s after the change was written"
        )
    parts.append(f"{1000 * (switch['reloaded_at'] - switch['seen_at']):.0f} ms after it was seen")
    return ", ".join(parts)


def _pull(
    region: str, reason: str, who: str | None, target: Target, stage: str | None, evacuate: bool
) -> None:
    if not reason.strip():
        raise typer.BadParameter("say why", param_hint="--reason")
    with _reported():
        lever = _lever(target, stage)
        for note in lever.notes:
            typer.echo(f"({note})")
        changed = change(
            lever,
            region,
            evacuate=evacuate,
            who=who or getpass.getuser(),
            why=reason,
            say=_say,
        )
        if lever.frontdoor_state is not None:
            switch = wait_for_frontdoor(lever.frontdoor_state, changed)
            if switch is None:
                typer.echo(
                    f"-- the front door did not switch within {FRONTDOOR_WAIT_SECONDS:g} s "
                    "(see `relay region show` and the stack's log)"
                )
            else:
                targets = ", ".join(f"{h} -> {r}" for h, r in switch["targets"].items())
                typer.echo(f"-- front door: {targets}; {_switch_line(switch)}")


@region_app.command("evacuate")
def evacuate(
    region: RegionArg,
    reason: ReasonOpt,
    who: WhoOpt = None,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """Stop a region serving: its hostname is answered by the other region, and its
    gateways send what still reaches them to the other region's modules. Refused (exit 2)
    if no other region serves."""
    _pull(region, reason, who, target, stage, evacuate=True)


@region_app.command("restore")
def restore(
    region: RegionArg,
    reason: ReasonOpt,
    who: WhoOpt = None,
    target: TargetOpt = Target.local,
    stage: StageOpt = None,
) -> None:
    """Let an evacuated region serve its hostname again."""
    _pull(region, reason, who, target, stage, evacuate=False)
