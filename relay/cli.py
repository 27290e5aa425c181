"""``relay``: run the local stack, stop/start its processes, mint dev tokens, assign loads,
release a new version of a module (or several, staged), replay notifications."""

from __future__ import annotations

import functools
import json
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from gateway.release.state import ControlTableReleases
from gateway.release.stats import ControlTableStats
from shared_contracts.identity import Role

from . import demo
from .cells import cells_app
from .cloud import ROOT
from .contracts import contracts_app
from .devissuer import DevIssuer
from .levers import lever_app
from .regions import region_app
from .release.controller import Outcome
from .release.policy import Policy
from .stack import STATE_DIR, LocalStack
from .supervisor import ControlError, control_request

if TYPE_CHECKING:
    from gateway.release.state import Release, ReleaseStore
    from gateway.release.stats import StatsStore

    from .release import Plan
    from .release.cells import BreakerSource, CelledOutcome
    from .release.contract import ContractReport
    from .release.deploy import DeployResult, VersionHost
    from .release.plan import Stage

app = typer.Typer(help="Relay gateway developer tools.", no_args_is_help=True, add_completion=False)
notifications = typer.Typer(help="The notifications worker's queues.", no_args_is_help=True)
app.add_typer(notifications, name="notifications")
app.add_typer(cells_app, name="cells")  # relay cells show|place|move (docs/cells.md)
app.add_typer(region_app, name="region")  # relay region show|evacuate|restore
app.add_typer(lever_app, name="lever")  # relay lever list|pull|release
app.add_typer(contracts_app, name="contracts")  # relay contracts check|release [module]


@functools.cache
def _issuer() -> DevIssuer:
    """The local issuer, loaded once per command (parsing its RSA key costs ~30 ms, and
    `relay deploy` mints a token for each of a thousand synthetic drivers)."""
    return DevIssuer.load_or_create(STATE_DIR)


def mint(role: Role, driver_id: str | None = None, hours: float = 12) -> str:
    """A token from the local Cognito-shaped issuer (its key lives in .relay/)."""
    sub = driver_id if role is Role.DRIVER and driver_id else f"{role.value}-dev"
    return _issuer().mint(
        sub, role, driver_id if role is Role.DRIVER else None, ttl_seconds=int(hours * 3600)
    )


def _state() -> dict:
    path = STATE_DIR / "stack.json"
    if not path.exists():
        raise typer.BadParameter("the local stack is not running: start it with `make dev`")
    return json.loads(path.read_text())


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Gateway port on 127.0.0.1")] = 8000,
    seed: Annotated[bool, typer.Option(help="Seed demo data")] = True,
    tls: Annotated[bool, typer.Option(help="Serve the gateway over HTTPS")] = False,
    gateways: Annotated[
        int,
        typer.Option(
            min=1,
            max=32,
            help="Gateway processes; more than 1 run behind nginx (round-robin) on --port",
        ),
    ] = 1,
    cells: Annotated[
        int,
        typer.Option(
            min=1,
            max=4,
            help="Loads cells: N > 1 runs loads/cell-1 .. loads/cell-N, each its own tables and "
            "process (~70 MB each: 2 run fine on a 2-core laptop); 1 runs loads uncelled",
        ),
    ] = 2,
    regions: Annotated[
        str,
        typer.Option(
            help="Regions, the primary first: two (us-east-1,us-west-2) run the second "
            "region's gateway and critical modules too, the global tables' replicator and a "
            "front door on --port playing Route 53 (one gateway per region, no --tls)",
        ),
    ] = "us-east-1",
) -> None:
    """Run the whole system locally until Ctrl-C."""
    names = tuple(r.strip() for r in regions.split(",") if r.strip())
    try:
        LocalStack(regions=names).check_regions()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--regions") from None
    if len(names) > 1 and (gateways > 1 or tls):
        # One gateway per region behind the front door: a fleet per region, or TLS at the
        # front door, is not what a two-region run rehearses (the front door's switch is).
        raise typer.BadParameter(
            "two regions run one gateway each behind the front door, over plain HTTP: "
            "use it without --gateways and --tls",
            param_hint="--regions",
        )
    stop = threading.Event()
    # Both stop it, also when started in the background, where SIGINT starts out ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    typer.echo(
        "Starting the emulator, the modules"
        + (f" ({cells} loads cells)" if cells > 1 else "")
        + " and "
        + (f"{gateways} gateways behind nginx ..." if gateways > 1 else "the gateway ...")
        + (f" in {len(names)} regions ({', '.join(names)})" if len(names) > 1 else "")
    )
    # A process that exits is restarted with backoff; its exit and restart are printed.
    with LocalStack(
        gateway_port=port,
        seed=seed,
        tls=tls,
        gateways=gateways,
        cells=cells,
        regions=names,
        supervise=True,
        console=True,
        on_event=lambda message: typer.echo(message, err=True),
    ) as stack:
        token = mint(Role.DRIVER, demo.DRIVERS[0])
        typer.echo(f"\nRelay is up. Gateway: {stack.gateway_url}   emulator: {stack.emulator_url}")
        typer.echo(f"dashboard: {stack.console_url} (paste the ops token printed below)")
        for name, proc in stack.processes.items():
            typer.echo(
                f"  {name:<24} {proc.url if proc.port else '(worker)'}   log: {proc.log_path}"
            )
        typer.echo(f"\nDev token for driver {demo.DRIVERS[0]} (12 h):\n{token}\n")
        typer.echo(f"Ops token (12 h; the dashboard, /ops/*):\n{stack.ops_token}\n")
        ca = stack.processes[stack.gateway_names[0]].ca_file
        cacert = f"--cacert {ca} " if ca else ""
        typer.echo(
            f"Try:\ncurl -s {cacert}-H 'Authorization: Bearer {token}' {stack.gateway_url}/loads\n"
        )
        if stack.multi_region:
            _print_regions(stack, token)
        typer.echo(
            "Other tokens: .venv/bin/relay token --driver D-1002 | --role dispatch\n"
            "Game days: .venv/bin/relay ps | stop NAME | start NAME | restart NAME "
            "(a process that exits is restarted; one stopped stays down)\n"
            "Release a module: .venv/bin/relay deploy message --ref <git ref | dir> "
            "(docs/releases.md)\n"
            "Press Ctrl-C to stop everything."
        )
        while not stop.wait(0.5):  # short waits: signal handlers run between them
            pass
        typer.echo("\nStopping ...")


def _print_regions(stack: LocalStack, token: str) -> None:
    """What a two-region run adds: each region's gateway, the front door's hostnames, the
    replication stats, the lever."""
    from .frontdoor import hostname

    typer.echo("Regions (the front door plays Route 53: a hostname per region):")
    for region in stack.regions:
        typer.echo(f"  {region:<12} gateway {stack.region_gateway_url(region)}")
        typer.echo(
            f"    curl -s -H 'Host: {hostname(region)}' "
            f"-H 'Authorization: Bearer {token}' {stack.gateway_url}/loads -D - -o /dev/null"
        )
    typer.echo(
        f"  any other Host is {hostname(stack.primary_region)}; the answer's relay-region "
        "header names the region that served it"
    )
    typer.echo(f"  replication stats: {stack.replication_stats_file}")
    typer.echo(
        f"  front door switches: {stack.state_dir / 'frontdoor.json'}\n"
        f"Evacuate a region: .venv/bin/relay region evacuate {stack.primary_region} "
        '--reason "game day"   (relay region show | restore)\n'
    )


ProcessName = Annotated[
    str,
    typer.Argument(
        help="emulator, loads, gatepass, navigate, message, notifications, replay, console or "
        "gateway "
        "(with --gateways N: gateway-1 .. gateway-N and balancer; with --cells N: "
        "loads/cell-1 .. loads/cell-N instead of loads; with --regions: replicator, frontdoor "
        "and the second region's us-west-2/gateway, us-west-2/loads ...)"
    ),
]


def _control(request: dict) -> dict:
    """Send ``request`` to the running `relay dev` over its control socket."""
    path = _state().get("control_socket")
    if not path:
        raise typer.BadParameter("the running stack is not supervised (start it with `make dev`)")
    try:
        answer = control_request(Path(path), request)
    except ControlError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if not answer.get("ok"):
        typer.echo(answer.get("error", "failed"), err=True)
        raise typer.Exit(1)
    return answer


@app.command()
def ps() -> None:
    """The running stack's processes: state, pid, restarts, url."""
    rows = _control({"command": "ps"})["processes"]
    # us-west-2/loads/cell-1 (relay dev --regions) is wider than today's names
    width = max([14, *(len(row["name"]) for row in rows)])
    typer.echo(f"{'NAME':<{width}} {'STATE':<11} {'PID':>7} {'RESTARTS':>8} {'LAST-EXIT':>9}  URL")
    for row in rows:
        last_exit = "-" if row.get("last_exit") is None else row["last_exit"]
        line = (
            f"{row['name']:<{width}} {row['state']:<11} {row['pid'] or '-':>7} "
            f"{row['restarts']:>8} {last_exit:>9}  {row['url'] or '(worker)'}"
        )
        if row.get("restart_in") is not None:
            line += f"  (restart in {row['restart_in']:g} s)"
        typer.echo(line)


@app.command("stop")
def stop_process(name: ProcessName) -> None:
    """Stop one process of the running stack; it stays down until `relay start NAME`."""
    typer.echo(_control({"command": "stop", "name": name})["message"])


@app.command("start")
def start_process(name: ProcessName) -> None:
    """Start a stopped process of the running stack again (waits until it is ready)."""
    typer.echo(_control({"command": "start", "name": name})["message"])


@app.command("restart")
def restart_process(name: ProcessName) -> None:
    """Stop and start one process of the running stack (waits until it is ready)."""
    typer.echo(_control({"command": "restart", "name": name})["message"])


@app.command()
def token(
    driver: Annotated[str | None, typer.Option(help="Driver id, e.g. D-1001")] = None,
    role: Annotated[Role, typer.Option(help="driver, gate, dispatch or ops")] = Role.DRIVER,
    hours: Annotated[float, typer.Option(min=0.01, max=24)] = 12,
) -> None:
    """Print a dev token for the local gateway."""
    if role is Role.DRIVER and not driver:
        raise typer.BadParameter("a driver token needs --driver")
    typer.echo(mint(role, driver, hours))


@app.command("assign-load")
def assign_load(
    load_id: Annotated[str, typer.Option(help="New load id, e.g. L-9001")],
    driver: Annotated[str, typer.Option(help="Driver id")],
    route: Annotated[str, typer.Option(help="Facility ids, pickup first")] = "F-CHI,F-IND",
    starts_in_hours: Annotated[float, typer.Option()] = 1.0,
) -> None:
    """Assign a load to a driver through the gateway, as dispatch does."""
    gateway = _state()["gateway_url"]
    command = demo.assignment(
        load_id, driver, route.split(","), datetime.now(UTC), timedelta(hours=starts_in_hours)
    )
    r = httpx.post(
        f"{gateway}/dispatch/assignments",
        json=command.model_dump(mode="json"),
        headers={"authorization": "Bearer " + mint(Role.DISPATCH)},
        timeout=10,
    )
    typer.echo(json.dumps(r.json(), indent=2))
    raise typer.Exit(0 if r.status_code == 201 else 1)


@app.command("openapi")
def openapi_doc(
    check: Annotated[bool, typer.Option(help="Fail if gateway/ops/openapi.json is stale")] = False,
) -> None:
    """Regenerate gateway/ops/openapi.json from the modules' contracts."""
    from . import openapi

    raise typer.Exit(openapi.main(["--check"] if check else []))


# --- releases (docs/releases.md) --------------------------------------------------------

PLAN_FILE = Path("releases/plan.toml")


def _local_dynamodb(state: dict) -> object:
    """The local stack's emulator, as a boto3 DynamoDB resource."""
    import boto3

    return boto3.resource(
        "dynamodb",
        endpoint_url=state["emulator_url"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local emulator's dummy credentials
    )


def _release_stores(state: dict) -> tuple[ControlTableReleases, ControlTableStats]:
    """The control table's releases and stats, in the local stack's emulator."""
    table = state.get("control_table")
    if not table:
        raise typer.BadParameter("the running stack has no control table (restart `make dev`)")
    dynamodb = _local_dynamodb(state)
    return ControlTableReleases(table, dynamodb=dynamodb), ControlTableStats(
        table, dynamodb=dynamodb
    )


def _policy_for(
    module: str,
    plan: Path,
    *,
    steps: str | None,
    interval: float | None,
    min_calls: int | None,
    settings: list[str] | None = None,
) -> Policy:
    """The plan file's policy for ``module`` (its defaults if it has no stage), with the
    options given on the command line (``--set name=value`` for any other setting)."""
    from dataclasses import replace

    from .release import load_plan
    from .release.plan import settings_from_pairs

    policy = next((s.policy for s in load_plan(plan).stages if s.module == module), Policy())
    given = settings_from_pairs(settings or [])
    if steps:
        given["steps"] = tuple(float(s) for s in steps.split(","))
    if interval is not None:  # and a tenth of it as the tick
        given |= {"interval_seconds": interval, "tick_seconds": 0.0}
    if min_calls is not None:
        given["min_calls"] = min_calls
    return replace(policy, **given)


def _deploy_one(
    module: str,
    ref: str | None,
    policy: Policy,
    state: dict,
    *,
    traffic: bool,
    rate: float,
) -> int:
    """One module's release on the running stack: ``ref``'s version, or (None) the running
    release taken over (``--resume``). A celled module (``loads`` on ``relay dev --cells
    N``) is released cell by cell, each cell baked and gated (relay/release/cells.py); a
    cell's unit (``loads/cell-1``) alone like any module."""
    from .release.cells import cells_from_state
    from .release.deploy import contract_check, deploy, resolve_source, resume
    from .release.display import ProgressDisplay
    from .release.hosts import ControlSocketHost
    from .release.traffic import SyntheticTraffic

    if not state.get("control_socket"):
        raise typer.BadParameter("the running stack is not supervised (start it with `make dev`)")
    store, stats = _release_stores(state)
    host = ControlSocketHost(Path(state["control_socket"]), state["modules"])
    say = lambda message: typer.echo(f"-- {message}")  # noqa: E731 - one line's callback
    cells = cells_from_state(state, module)
    if ref is None and cells:  # --resume: the cell whose release is running
        running = [
            f"{module}/{c}"
            for c in cells
            if (r := store.get(f"{module}/{c}")) is not None and r.phase == "running"
        ]
        if not running:
            raise ValueError(f"no cell of {module} has a release running")
        module, cells = running[0], []
    load = (
        SyntheticTraffic(
            state["gateway_url"],
            [module.partition("/")[0]],  # a cell's drivers read the module as any driver
            lambda d: mint(Role.DRIVER, d),
            rate=rate,
        )
        if traffic
        else None
    )
    try:
        if load is not None:
            load.__enter__()
        if ref is None:
            with ProgressDisplay() as display:
                result = resume(
                    module,
                    host=host,
                    store=store,
                    stats=stats,
                    policy=policy,
                    on_progress=display,
                    on_step=say,
                )
            code = _report_deploy(result)
        else:
            source = resolve_source(ref, repo=ROOT, versions_dir=STATE_DIR / "versions")
            check = contract_check(Path(state["identity_key_file"]).read_text())

            def run(unit: str) -> DeployResult:
                with ProgressDisplay() as display:
                    result = deploy(
                        unit,
                        source,
                        host=host,
                        store=store,
                        stats=stats,
                        policy=policy,
                        check=check,
                        on_progress=display,
                        on_step=say,
                    )
                _report_deploy(result)
                return result

            if cells:
                celled = _release_cells(
                    module,
                    cells,
                    run,
                    host=host,
                    store=store,
                    breakers=_local_breakers(state),
                    probe=_local_probe,
                    source_for=_local_source,
                    policy=policy,
                    actor="relay deploy",
                )
                code = 0 if celled.promoted else 1
            else:
                code = run(module).exit_code
    finally:
        if load is not None:
            load.stop()
    if load is not None:
        typer.echo(f"synthetic traffic: {dict(sorted(load.statuses.items()))}")
    return code


def _report_deploy(result: DeployResult) -> int:
    """A unit's release as it ended: the contract's problems, or the summary table."""
    from .release.display import summary_table

    module = result.module
    if result.contract is not None and not result.contract.ok:
        typer.echo(f"\n{module}@{result.version} breaks its published contract; no traffic:")
        for problem in result.contract.problems:
            typer.echo(f"  {problem.operation}: {problem.check}: {problem.detail}")
    if result.outcome is not None:
        typer.echo("\n" + summary_table(result.outcome))
        typer.echo(
            f"{module}@{result.version}: "
            + ("PROMOTED" if result.promoted else "ROLLED BACK")
            + f" ({result.outcome.reason})"
        )
    return result.exit_code


def _release_cells(
    module: str,
    cells: list[str],
    run: Callable[[str], DeployResult],
    *,
    host: VersionHost,
    store: ReleaseStore,
    breakers: BreakerSource | None,
    probe: Callable[[VersionHost, str, Release], list[str]],
    source_for: Callable[[str], Path | None] | None,
    policy: Policy,
    actor: str,
) -> CelledOutcome:
    """A celled module's release, cell by cell (relay/release/cells.py), each cell's
    progress, bake, gate and end said as it goes, then one line per cell."""
    from .release.cells import HealthGate, cell_release, release_cells, revert_cell
    from .release.display import cells_summary

    typer.echo(f"== {module} is celled: {', '.join(cells)}, one after another")
    gate = HealthGate(
        store,
        breakers,
        lambda unit, release: probe(host, unit, release),
        tick_seconds=policy.tick_seconds,
        on_tick=lambda line: typer.echo(f"   {line}"),
    )
    outcome = release_cells(
        module,
        cells,
        lambda unit: cell_release(lambda: run(unit)),
        gate=gate,
        bake_seconds=policy.cell_bake_seconds,
        revert=lambda promoted, released, result: revert_cell(
            promoted,
            released.previous_version or "",
            released.previous_url,
            host=host,
            store=store,
            reasons=result.reasons,
            actor=actor,
            source_for=source_for,
        ),
        on_event=lambda event: typer.echo(f"== {event.line}"),
    )
    typer.echo("\n" + cells_summary(outcome))
    return outcome


def _local_breakers(state: dict) -> BreakerSource:
    """The fleet's breaker items in the local control table."""
    from gateway.resilience.fleet import ControlTableBreakers

    return ControlTableBreakers(state["control_table"], dynamodb=_local_dynamodb(state))


def _local_probe(host: VersionHost, unit: str, release: Release) -> list[str]:
    """A promoted cell's process answers its health check as the promoted version."""
    from .release.deploy import running_version

    url = release.stable_url or host.url(unit)
    try:
        serving = running_version(url)
    except httpx.HTTPError as exc:
        return [f"{unit} at {url} does not answer its health check ({exc!r})"]
    if serving != release.stable_version:
        return [f"{unit} at {url} says it is {serving}, not {release.stable_version}"]
    return []


def _local_source(version: str) -> Path | None:
    """Where a version's code is, to start it again (a cell put back after its gate): the
    working tree when it is the tree's label (what `relay dev` started), else the commit
    it names, checked out under .relay/versions; None for a directory's label."""
    from .release.deploy import resolve_source
    from .stack import source_version

    if version == source_version(ROOT):
        return ROOT
    try:
        found = resolve_source(version, repo=ROOT, versions_dir=STATE_DIR / "versions")
    except ValueError:
        return None
    return found.path if found.version == version else None


@app.command()
def deploy(
    module: Annotated[
        str,
        typer.Argument(
            help="loads, gatepass, navigate or message (a celled one cell by cell), or one "
            "cell of a celled module: loads/cell-1"
        ),
    ],
    ref: Annotated[
        str | None, typer.Option(help="A git ref (checked out with git worktree) or a dir")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Take over the module's running release instead")
    ] = False,
    plan: Annotated[Path, typer.Option(help="The plan file whose policy applies")] = PLAN_FILE,
    steps: Annotated[
        str | None, typer.Option(help="Canary weights in percent, e.g. 1,10,50,100")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(min=1, help="Seconds of each analysis interval")
    ] = None,
    min_calls: Annotated[
        int | None, typer.Option(min=1, help="Calls per version before any verdict")
    ] = None,
    traffic: Annotated[
        bool, typer.Option(help="Send synthetic drivers' reads through the gateway meanwhile")
    ] = True,
    rate: Annotated[float, typer.Option(min=1, max=500, help="Synthetic requests/s")] = 60.0,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Any other policy setting, e.g. --set min_p99_delta_ms=60 (repeatable)"
        ),
    ] = None,
) -> None:
    """Release a new version of one module on the running local stack: it runs beside the
    stable one, its contract is checked before any traffic, then a sticky share of drivers
    moves to it step by step, judged against the stable version over the same seconds.
    Exits 0 when promoted, 1 when rolled back, 2 when refused before traffic. With
    --resume, the running release whose `relay deploy` stopped is judged on from its
    stored step and finished."""
    from .release import PolicyError, ReleaseError

    if (ref is None) == (not resume):
        raise typer.BadParameter("give --ref <git ref | dir>, or --resume", param_hint="--ref")
    try:
        policy = _policy_for(
            module, plan, steps=steps, interval=interval, min_calls=min_calls, settings=setting
        )
        code = _deploy_one(
            module, None if resume else ref, policy, _state(), traffic=traffic, rate=rate
        )
    except (ReleaseError, PolicyError, ValueError, ControlError) as exc:
        typer.echo(f"relay deploy: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


class Target(StrEnum):
    local = "local"
    aws = "aws"


@app.command()
def release(
    plan: Annotated[Path, typer.Argument(help="The plan file, e.g. releases/plan.toml")],
    ref: Annotated[
        str | None,
        typer.Option(help="local: the git ref (or dir) every stage releases (required)"),
    ] = None,
    target: Annotated[
        Target,
        typer.Option(help="local: the running local stack; aws: a stage's stacks (AWS_REGION)"),
    ] = Target.local,
    stage: Annotated[
        str | None, typer.Option(help="aws: the stacks' Stage (relay-<stage>-<module>)")
    ] = None,
    config_env: Annotated[
        str | None, typer.Option(help="aws: the samconfig.toml environment sam deploys with")
    ] = None,
    modules: Annotated[
        str | None,
        typer.Option(help="aws: the plan's modules to release, space-separated (default all)"),
    ] = None,
    traffic: Annotated[
        bool, typer.Option(help="local: synthetic drivers' reads meanwhile (never in AWS)")
    ] = True,
    rate: Annotated[float, typer.Option(min=1, max=500, help="Synthetic requests/s")] = 60.0,
) -> None:
    """Release every module of the plan in its order (least critical first), with bake time
    between stages; halts at the first stage that is not promoted and leaves the earlier
    ones as they are. Exits 0 when every stage is promoted. Locally (the running stack)
    each stage releases --ref; with --target aws each stage deploys the module's stack from
    this checkout (a new version on its canary alias) and releases that version against
    live (docs/deploy.md, Canary releases)."""

    from .release import PolicyError, ReleaseError, load_plan

    if target is Target.aws:
        raise typer.Exit(
            _release_aws(plan, ref=ref, stage=stage, config_env=config_env, modules=modules)
        )
    for name, given in (("--stage", stage), ("--config-env", config_env), ("--modules", modules)):
        if given is not None:
            raise typer.BadParameter("only with --target aws", param_hint=name)
    if ref is None:
        raise typer.BadParameter("required with --target local", param_hint="--ref")
    state = _state()
    # a celled module's processes are its cells' (loads/cell-1 ...): the plan names the module
    runnable = [*state.get("modules", {}), *(state.get("cells") or {})]
    try:
        loaded = load_plan(plan, modules=runnable)
    except (ReleaseError, PolicyError, ValueError) as exc:
        typer.echo(f"relay release: {exc}", err=True)
        raise typer.Exit(2) from None
    codes: dict[str, int] = {}

    def stage_release(st: Stage) -> Outcome:
        try:
            codes[st.module] = _deploy_one(
                st.module, ref, st.policy, _state(), traffic=traffic, rate=rate
            )
        except (ReleaseError, PolicyError, ValueError, ControlError) as exc:
            typer.echo(f"relay release: {st.module}: {exc}", err=True)
            return Outcome(st.module, "", False, str(exc))
        promoted = codes[st.module] == 0
        reason = {0: "promoted", 1: "rolled back", 2: "refused before traffic"}
        return Outcome(st.module, "", promoted, reason.get(codes[st.module], "failed"))

    raise typer.Exit(_run_stages(loaded, stage_release))


def _run_stages(plan: Plan, stage_release: Callable[[Stage], Outcome]) -> int:
    """The plan's stages in order with their bake times, each announced; the summary; the
    exit code (0: every stage promoted)."""
    import time as _time

    from .release import run_plan
    from .release.display import plan_summary

    outcome = run_plan(
        plan,
        stage_release,
        clock=_time.time,
        sleep=_time.sleep,
        on_event=lambda event: typer.echo(f"== {event.message}"),
    )
    typer.echo("\n" + plan_summary(outcome))
    return 0 if outcome.promoted else 1


def _aws_plan(plan: Path, modules: str | None) -> Plan:
    """The plan's stages for ``--modules`` (space-separated, each one of the plan's), in
    the plan's order; all of them without it."""
    from .release import Plan, load_plan

    loaded = load_plan(plan)
    if modules is None:
        return loaded
    wanted = modules.split()
    if not wanted:
        raise typer.BadParameter("names no module", param_hint="--modules")
    unknown = [m for m in wanted if m not in loaded.modules]
    if unknown:
        raise typer.BadParameter(
            f"{', '.join(unknown)} not in {plan} (its modules: {' '.join(loaded.modules)})",
            param_hint="--modules",
        )
    return Plan([s for s in loaded.stages if s.module in wanted])


def _checkout_version(repo: Path) -> str:
    """The label of what this checkout deploys: its commit (``+dirty`` with changes)."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30
        ).stdout.strip()

    commit = git("rev-parse", "--short=10", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


@dataclass
class AwsRelease:
    """What ``relay release --target aws`` releases with (made by :func:`_aws_parts`)."""

    host: VersionHost
    store: ReleaseStore
    stats: StatsStore
    check: Callable[[str, str], ContractReport]
    # a module's cells in the stage (from SSM; none: not celled) and the fleet's breakers
    cells: Callable[[str], list[str]] = lambda _module: []
    breakers: BreakerSource | None = None


def _aws_release_stores(stage: str) -> tuple[ControlTableReleases, ControlTableStats]:
    """The stage's control table (named by the gateway stack's SSM parameter)."""
    from .release.aws import make_client, region_from_environment

    region = region_from_environment()
    return _aws_stores(stage, region, make_client("ssm", region))


def _aws_stores(
    stage: str, region: str, ssm: object
) -> tuple[ControlTableReleases, ControlTableStats]:
    import boto3

    from .release.aws import client_config, control_table_name

    table = control_table_name(stage, ssm=ssm)
    dynamodb = boto3.resource("dynamodb", region_name=region, config=client_config())
    return ControlTableReleases(table, dynamodb=dynamodb), ControlTableStats(
        table, dynamodb=dynamodb
    )


def _aws_parts(stage: str, config_env: str, repo: Path) -> AwsRelease:
    """The stage's host, the control table (named by the gateway stack's SSM parameter)
    and the contract check, signed as the gateway signs (the identity key the modules'
    pre-traffic hooks use) and carried with SigV4 to the IAM-authenticated canary URL;
    a module's cells (SSM) and the fleet's breakers, for a celled module's health gates."""
    import boto3

    from gateway.resilience.fleet import ControlTableBreakers

    from .release.aws import (
        AwsAliasHost,
        SignedTransport,
        client_config,
        identity_key_pem,
        make_client,
        region_from_environment,
    )
    from .release.cells import cells_from_ssm
    from .release.deploy import contract_check

    region = region_from_environment()
    ssm = make_client("ssm", region)
    store, stats = _aws_stores(stage, region, ssm)
    dynamodb = boto3.resource("dynamodb", region_name=region, config=client_config())
    breakers = ControlTableBreakers(store.table_name, dynamodb=dynamodb)
    pem = identity_key_pem(stage, secrets=make_client("secretsmanager", region))
    host = AwsAliasHost(
        stage,
        region=region,
        config_env=config_env,
        repo=repo,
        ssm=ssm,
        say=lambda message: typer.echo(f"-- {message}"),
    )
    return AwsRelease(
        host=host,
        store=store,
        stats=stats,
        check=contract_check(pem, transport=SignedTransport(region)),
        cells=lambda module: cells_from_ssm(ssm, stage, module),
        breakers=breakers,
    )


def _release_aws(
    plan: Path,
    *,
    ref: str | None,
    stage: str | None,
    config_env: str | None,
    modules: str | None,
) -> int:
    """``relay release --target aws``: each of the plan's (chosen) modules in order, its
    stack deployed from this checkout, then released against live. No synthetic traffic:
    drivers' own calls judge it."""

    from .release import PlanError
    from .release.deploy import AlreadyRunning, Source, deploy
    from .release.display import ProgressDisplay

    if ref is not None:
        raise typer.BadParameter(
            "not with --target aws: it deploys this checkout", param_hint="--ref"
        )
    if not stage:
        raise typer.BadParameter("required with --target aws", param_hint="--stage")
    if not config_env:
        raise typer.BadParameter("required with --target aws", param_hint="--config-env")
    try:
        chosen = _aws_plan(plan, modules)
    except PlanError as exc:
        typer.echo(f"relay release: {exc}", err=True)
        return 2
    repo = Path.cwd()
    try:
        parts = _aws_parts(stage, config_env, repo)
    except Exception as exc:  # no region, no control table or identity secret, no access
        typer.echo(f"relay release: {type(exc).__name__}: {exc}", err=True)
        return 2
    source = Source(repo, _checkout_version(repo))
    policy = Policy()
    actor = f"relay release --target aws ({stage})"

    def run(unit: str) -> DeployResult:
        with ProgressDisplay() as display:
            return deploy(
                unit,
                source,
                host=parts.host,
                store=parts.store,
                stats=parts.stats,
                policy=policy,
                check=parts.check,
                on_progress=display,
                on_step=lambda message: typer.echo(f"-- {message}"),
                actor=actor,
            )

    def stage_release(st: Stage) -> Outcome:
        nonlocal policy
        policy = st.policy
        try:
            cells = parts.cells(st.module)
        except Exception as exc:  # SSM unreadable: this stage is not released
            typer.echo(f"relay release: {st.module}: {type(exc).__name__}: {exc}", err=True)
            return Outcome(st.module, "", False, str(exc))
        if cells:
            return _release_cells(
                st.module,
                cells,
                lambda unit: _report_aws(run(unit)),
                host=parts.host,
                store=parts.store,
                breakers=parts.breakers,
                probe=_aws_probe,
                source_for=None,
                policy=st.policy,
                actor=actor,
            ).as_outcome()
        try:
            result = _report_aws(run(st.module))
        except AlreadyRunning as exc:  # the deploy published no new version
            typer.echo(f"-- {exc}: nothing to release")
            return Outcome(st.module, "", True, "already live")
        except Exception as exc:  # a failed deploy or AWS call: this stage is not promoted
            typer.echo(f"relay release: {st.module}: {type(exc).__name__}: {exc}", err=True)
            return Outcome(st.module, "", False, str(exc))
        if result.outcome is None:
            return Outcome(st.module, "", False, "refused before traffic (contract)")
        return result.outcome

    return _run_stages(chosen, stage_release)


def _report_aws(result: DeployResult) -> DeployResult:
    """A unit's release in AWS as it ended (the contract's problems, or its summary)."""
    from .release.display import summary_table

    if result.contract is not None and not result.contract.ok:
        typer.echo(f"\n{result.module}@{result.version} breaks its published contract; no traffic:")
        for problem in result.contract.problems:
            typer.echo(f"  {problem.operation}: {problem.check}: {problem.detail}")
    if result.outcome is not None:
        typer.echo("\n" + summary_table(result.outcome))
        verdict = "PROMOTED" if result.promoted else "ROLLED BACK"
        typer.echo(f"{result.module}@{result.version}: {verdict} ({result.outcome.reason})")
    return result


def _aws_probe(host: VersionHost, unit: str, release: Release) -> list[str]:
    """A promoted cell in AWS: live names the version and no canary alarm of its stack is
    in ALARM (the host's own check; a host without one has nothing more to say)."""
    check = getattr(host, "health_problems", None)
    if check is None:
        return []
    try:
        return list(check(unit, release.stable_version))
    except Exception as exc:
        return [f"{unit}: could not check its health ({type(exc).__name__}: {exc})"]


@app.command()
def rollback(
    module: Annotated[str, typer.Argument(help="The module whose release to stop")],
    reason: Annotated[str, typer.Option(help="Why (kept with the release)")],
    target: Annotated[
        Target, typer.Option(help="local: the running local stack; aws: a stage (AWS_REGION)")
    ] = Target.local,
    stage: Annotated[str | None, typer.Option(help="aws: the stage")] = None,
) -> None:
    """Roll a running release back to 0% now (every gateway follows within a second or two);
    locally the canary's process is stopped too. In AWS the canary alias stays as it is
    (no traffic reaches it) until the next deploy."""
    from .release import ReleaseController
    from .release.deploy import DRAIN_SECONDS

    if target is Target.aws:
        if not stage:
            raise typer.BadParameter("required with --target aws", param_hint="--stage")
        store, stats = _aws_release_stores(stage)
    else:
        state = _state()
        store, stats = _release_stores(state)
    controller = ReleaseController(store, stats)
    # A celled module's release runs in one cell at a time (loads/cell-2): `relay rollback
    # loads` stops whichever of its cells' releases is running, as well as its own.
    units = [module]
    if "/" not in module:
        units += sorted(
            unit
            for unit, release in store.load().items()
            if unit.startswith(f"{module}/") and release.phase == "running"
        )
    stopped = []
    for unit in units:
        stored = controller.rollback(unit, reason, by="relay rollback")
        if stored is not None:
            typer.echo(f"{unit}: release {stored.release_id} rolled back to 0%")
            stopped.append((unit, stored.canary_version))
    if not stopped:
        typer.echo(f"{module} has no release running")
        raise typer.Exit(1)
    if target is Target.local and state.get("control_socket"):
        import time as _time

        _time.sleep(DRAIN_SECONDS)  # every gateway reads weight 0 before the canary stops
        for unit, version in stopped:
            control_request(
                Path(state["control_socket"]),
                {"command": "version-retire", "module": unit, "version": version},
            )
            typer.echo(f"{unit}@{version} stopped")


@notifications.command("replay")
def replay(limit: Annotated[int | None, typer.Option(help="At most this many")] = None) -> None:
    """Move dead-lettered notifications back to the queue for another delivery attempt."""
    import boto3

    from modules.notifications.replay import replay_dead_letters

    state = _state()
    sqs = boto3.client(
        "sqs",
        endpoint_url=state["emulator_url"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the local emulator's dummy credentials
    )
    moved = replay_dead_letters(
        sqs,
        state["notifications_dead_letter_queue_url"],
        state["notifications_queue_url"],
        limit=limit,
    )
    typer.echo(f"replayed {moved} notification(s)")


@app.command()
def gameday(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(help="Scenarios (gamedays/<name>.json), or all (the default)"),
    ] = None,
    short: Annotated[
        bool, typer.Option(help="Hold each fault 4 s instead of 20 s (a smoke run)")
    ] = False,
    running: Annotated[
        bool,
        typer.Option(help="Act on the running `make dev` stack instead of stacks of its own"),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the matrix here (e.g. docs/gamedays.md) and its chart (.svg)"),
    ] = None,
) -> None:
    """Run game days (Chaos Toolkit experiments) under a synthetic load; exit 1 when an
    invariant breaks. docs/gamedays.md is the last full run's report."""
    from .gameday import ScenarioError
    from .gameday import main as run_gamedays

    try:
        code = run_gamedays(scenarios or [], short=short, running=running, report_path=report)
    except ScenarioError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIOS") from None
    raise typer.Exit(code)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
