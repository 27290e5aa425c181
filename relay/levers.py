"""``relay lever``: the operators' emergency levers on the running local stack, through the
gateway's operator API (``/ops/levers``, docs/operations.md "Levers").

``relay lever list`` prints the levers in force and the newest pulls and releases; ``relay
lever pull fallback gatepass --reason "kms throttling" --ttl 600`` pulls one (renewed from
now if it is already pulled); ``relay lever release fallback:gatepass --reason "kms fine"``
lets it go early. The gateway is the running stack's (``.relay/stack.json``), or
``--gateway URL``; the command mints an ops token from the local issuer in the name of
``--who`` (default: your OS user), which the audit trail keeps. A refusal (a safety rule,
a type or target the stage does not have, a lever not in force) exits 2; any other
failure 1.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared_contracts.identity import Role
from shared_contracts.levers import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, MIN_TTL_SECONDS

lever_app = typer.Typer(
    help="Emergency levers: shed a tier, hold a module on its fallback, pause notifications, "
    "evacuate a region or a cell.",
    no_args_is_help=True,
)
TIMEOUT_SECONDS = 10.0
REFUSED = 2  # exit code: the gateway refused the change (409, 422, 404)

GatewayOpt = Annotated[
    str | None, typer.Option(help="The gateway's URL (default: the running stack's)")
]
WhoOpt = Annotated[str | None, typer.Option(help="Who (default: your OS user), for the audit")]


def _gateway(url: str | None) -> tuple[str, Any]:
    """The gateway's URL and what verifies its certificate (the local stack's own, over TLS)."""
    from .stack import STATE_DIR

    if url is None:
        path = STATE_DIR / "stack.json"
        if not path.exists():
            raise typer.BadParameter("the local stack is not running: start it with `make dev`")
        url = str(json.loads(path.read_text())["gateway_url"])
    cert = STATE_DIR / "tls-cert.pem"
    return url.rstrip("/"), str(cert) if url.startswith("https") and cert.exists() else True


def _headers(who: str | None) -> dict[str, str]:
    from .cli import _issuer  # the local issuer (its key lives in .relay/)

    sub = who or getpass.getuser()
    return {"authorization": "Bearer " + _issuer().mint(sub, Role.OPS, None, ttl_seconds=300)}


def _call(method: str, path: str, gateway: str | None, who: str | None, **kw: Any) -> Any:
    url, verify = _gateway(gateway)
    try:
        r = httpx.request(
            method,
            url + path,
            headers=_headers(who),
            timeout=TIMEOUT_SECONDS,
            verify=verify,
            **kw,
        )
    except httpx.HTTPError as exc:
        typer.echo(f"relay lever: the gateway at {url} did not answer: {exc}", err=True)
        raise typer.Exit(1) from None
    if r.status_code in (404, 409, 422):
        typer.echo(f"relay lever: refused ({r.status_code}): {_detail(r)}", err=True)
        raise typer.Exit(REFUSED)
    if r.status_code >= 400:
        typer.echo(f"relay lever: {r.status_code}: {_detail(r)}", err=True)
        raise typer.Exit(1)
    return r.json() if r.content else None


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    errors = body.get("errors")
    detail = str(body.get("detail", body))
    if errors:
        detail += "; " + "; ".join(
            f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in errors
        )
    return detail


def _expires(expires_at: int | None, now: float) -> str:
    if expires_at is None:
        return "until restored"
    left = int(expires_at - now)
    return f"{left // 60} min {left % 60:02d} s" if left > 0 else "expired"


def levers_table(levers: list[dict[str, Any]], now: float) -> Table:
    table = Table(title=f"levers in force ({len(levers)})", title_justify="left")
    for column in ("lever", "who", "why", "pulled", "lets go in"):
        table.add_column(column)
    for lever in levers:
        table.add_row(
            lever["lever_id"],
            lever["who"],
            lever["why"],
            time.strftime("%H:%M:%S", time.gmtime(lever["pulled_at"])) + " UTC",
            _expires(lever.get("expires_at"), now),
        )
    return table


def audit_table(entries: list[dict[str, Any]]) -> Table:
    table = Table(title=f"last changes ({len(entries)}, newest first)", title_justify="left")
    for column in ("at", "action", "lever", "who", "why"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry["at"], entry["action"], entry["lever_id"], entry["who"], entry["why"])
    return table


@lever_app.command("list")
def list_levers(gateway: GatewayOpt = None, who: WhoOpt = None) -> None:
    """The levers in force and the newest pulls and releases."""
    view = _call("GET", "/ops/levers", gateway, who)
    console = Console()
    console.print(levers_table(view["levers"], time.time()))
    audit = view.get("audit")
    if isinstance(audit, list):
        console.print(audit_table(audit))
    else:
        typer.echo(f"audit: {audit}")


@lever_app.command("pull")
def pull(
    kind: Annotated[str, typer.Argument(metavar="TYPE", help="shed, fallback, pause or evacuate")],
    target: Annotated[
        str,
        typer.Argument(
            help="a tier (shed), a module or cell (fallback: loads/cell-1), notifications "
            "(pause), region:<name> or cell:<module>/<cell> (evacuate)"
        ),
    ],
    reason: Annotated[str, typer.Option(help="Why (kept with the lever and in the audit)")],
    ttl: Annotated[
        int,
        typer.Option(
            min=MIN_TTL_SECONDS,
            max=MAX_TTL_SECONDS,
            help="Seconds until it lets go by itself (an evacuated region: never)",
        ),
    ] = DEFAULT_TTL_SECONDS,
    gateway: GatewayOpt = None,
    who: WhoOpt = None,
) -> None:
    """Pull a lever (again: renewed from now). Refused by a safety rule: exit 2."""
    body = {"type": kind, "target": target, "reason": reason, "ttl_seconds": ttl}
    lever = _call("POST", "/ops/levers", gateway, who, json=body)
    Console().print(levers_table([lever], time.time()))


@lever_app.command("release")
def release(
    lever_id: Annotated[str, typer.Argument(help="The lever, e.g. fallback:gatepass")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit)")] = "released",
    gateway: GatewayOpt = None,
    who: WhoOpt = None,
) -> None:
    """Let a lever go before it expires (an evacuated region: restore it). Not in force:
    exit 2."""
    _call("POST", f"/ops/levers/{lever_id}/release", gateway, who, json={"reason": reason})
    typer.echo(f"{lever_id} released")
