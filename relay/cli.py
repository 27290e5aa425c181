"""``relay``: run the local stack, stop/start its processes, mint dev tokens, assign loads,
replay notifications."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer

from shared_contracts.identity import Role

from . import demo
from .devissuer import DevIssuer
from .stack import STATE_DIR, LocalStack
from .supervisor import ControlError, control_request

app = typer.Typer(help="Relay gateway developer tools.", no_args_is_help=True, add_completion=False)
notifications = typer.Typer(help="The notifications worker's queues.", no_args_is_help=True)
app.add_typer(notifications, name="notifications")


def mint(role: Role, driver_id: str | None = None, hours: float = 12) -> str:
    """A token from the local Cognito-shaped issuer (its key lives in .relay/)."""
    sub = driver_id if role is Role.DRIVER and driver_id else f"{role.value}-dev"
    return DevIssuer.load_or_create(STATE_DIR).mint(
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
) -> None:
    """Run the whole system locally until Ctrl-C."""
    stop = threading.Event()
    # Both stop it, also when started in the background, where SIGINT starts out ignored.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    typer.echo(
        "Starting the emulator, the modules and "
        + (f"{gateways} gateways behind nginx ..." if gateways > 1 else "the gateway ...")
    )
    # A process that exits is restarted with backoff; its exit and restart are printed.
    with LocalStack(
        gateway_port=port,
        seed=seed,
        tls=tls,
        gateways=gateways,
        supervise=True,
        on_event=lambda message: typer.echo(message, err=True),
    ) as stack:
        token = mint(Role.DRIVER, demo.DRIVERS[0])
        typer.echo(f"\nRelay is up. Gateway: {stack.gateway_url}   emulator: {stack.emulator_url}")
        for name, proc in stack.processes.items():
            typer.echo(
                f"  {name:<14} {proc.url if proc.port else '(worker)'}   log: {proc.log_path}"
            )
        typer.echo(f"\nDev token for driver {demo.DRIVERS[0]} (12 h):\n{token}\n")
        ca = stack.processes[stack.gateway_names[0]].ca_file
        cacert = f"--cacert {ca} " if ca else ""
        typer.echo(
            f"Try:\ncurl -s {cacert}-H 'Authorization: Bearer {token}' {stack.gateway_url}/loads\n"
        )
        typer.echo(
            "Other tokens: .venv/bin/relay token --driver D-1002 | --role dispatch\n"
            "Game days: .venv/bin/relay ps | stop NAME | start NAME | restart NAME "
            "(a process that exits is restarted; one stopped stays down)\n"
            "Press Ctrl-C to stop everything."
        )
        while not stop.wait(0.5):  # short waits: signal handlers run between them
            pass
        typer.echo("\nStopping ...")


ProcessName = Annotated[
    str,
    typer.Argument(
        help="emulator, loads, gatepass, navigate, message, notifications, replay or gateway "
        "(with --gateways N: gateway-1 .. gateway-N and balancer)"
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
    typer.echo(f"{'NAME':<14} {'STATE':<11} {'PID':>7} {'RESTARTS':>8} {'LAST-EXIT':>9}  URL")
    for row in rows:
        last_exit = "-" if row.get("last_exit") is None else row["last_exit"]
        line = (
            f"{row['name']:<14} {row['state']:<11} {row['pid'] or '-':>7} "
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
