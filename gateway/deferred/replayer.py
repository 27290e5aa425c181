"""Replays deferred writes to their module: the SQS FIFO-triggered half of the deferred fallback.

Lambda (or locally :mod:`relay.eventsource`) delivers batches of the deferred queue; each
write is sent to its module with its original idempotency key, identity and accepted time
(``x-relay-accepted-at``). Outcomes:

- 2xx: applied (or it had been applied already: the module answers the first result);
  recorded in the ledger, which releases the caller's later writes to that module;
- the module still unwell (unreachable, 5xx, 408/425/429, 409 "in progress" while an
  earlier attempt of the same write is still running, 401 when it cannot verify the
  gateway's identity context), or a game-day fault set on the module: the write fails and
  stays queued. Powertools' FIFO processor then also fails the rest of that message
  group in the batch (the caller's writes to that module, and only theirs: other groups
  go on), so one caller's writes to a module are applied strictly in order;
- any other 4xx: the module refused it for good (e.g. an event that no longer fits the
  load's state). It is *not* dropped: the ledger keeps it, with the module's status,
  problem code and detail, for the driver (``GET /deferred/{tracking_id}``) and operators
  (``/ops/status``), and the group moves on.

A write to a celled module goes to its key's cell as placed *when it is replayed*, not when
it was accepted: a write deferred while ``relay cells move`` moved its driver stays queued
while the key is moving (or while the placements cannot be read) and is then applied in
the cell the key moved to.

The ledger is written before the message is deleted: if it cannot be, the write stays
queued and is replayed again (idempotently) until the outcome is on record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
from aws_lambda_powertools.utilities.batch import (
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from gateway.cells.placement import PlacementTable
from gateway.cells.router import Cells
from gateway.config import GatewaySettings
from gateway.deferred.ledger import DeferredLedger, LedgerError
from gateway.deferred.queue import DeferredWrite
from gateway.levers import ActiveLevers, LeverStore
from gateway.regions.peers import PeerAddress, peer_configs, published
from gateway.resilience.faults import ControlTableFaults, FaultInjector, FaultKind
from gateway.routing.directory import ModuleDirectory
from gateway.routing.routes import RouteTable
from gateway.security.signer import SignerProvider
from gateway.security.sigv4 import SigV4Auth
from module_kit import logs, metrics
from shared_contracts import headers
from shared_contracts.degraded import DeferredRefusal, DeferredState

log = logging.getLogger("relay.gateway.replay")
LambdaHandler = Callable[[dict[str, Any], Any], PartialItemFailureResponse]
REPLAY_TIMEOUT_SECONDS = 10.0
# The module is not (yet) able to take the write: it stays queued.
RETRY_LATER_STATUSES = frozenset({401, 408, 425, 429})
IN_PROGRESS = "idempotency-in-progress"  # the first attempt is still being applied
PROBLEM_PREFIX = "urn:relay:problem:"


class ReplayFailed(Exception):
    """The write could not be applied now; it stays queued."""


def refusal_of(response: httpx.Response) -> DeferredRefusal:
    """The module's reason, from its problem answer (or just the status)."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return DeferredRefusal(status=response.status_code)
    kind = problem.get("type")
    return DeferredRefusal(
        status=response.status_code,
        code=kind.removeprefix(PROBLEM_PREFIX) if isinstance(kind, str) else None,
        detail=str(problem["detail"])[:500] if problem.get("detail") else None,
    )


class Replayer:
    def __init__(
        self,
        table: RouteTable,
        client: httpx.Client,
        signer: SignerProvider,
        *,
        ledger: DeferredLedger | None = None,
        faults: FaultInjector | None = None,
        cells: Cells | None = None,
        elsewhere: Mapping[str, Sequence[PeerAddress]] | None = None,
        levers: ActiveLevers | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table = table
        # operators' levers: a module (or cell) held on its fallback gets no writes either
        self.levers = levers
        # unit -> the peer regions' addresses of it (critical modules): a write whose module
        # is down here is applied there, with its idempotency key (a global table's record)
        self.elsewhere = elsewhere or {}
        self.cells = cells or Cells(table.modules, None, background=False)
        self.client = client
        self.signer = signer
        self.ledger = ledger
        self.faults = faults or FaultInjector()
        self.sleep = sleep

    def apply(self, write: DeferredWrite) -> int:
        """Replay one write; its log lines carry the original request's fields."""
        route = self.table.match(write.path)
        token = logs.bind_request(
            logs.RequestContext(
                write.request_id,
                write.module,
                route.prefix if route else "",
                write.identity.sub if write.identity else None,
            )
        )
        try:
            return self._apply(write)
        finally:
            logs.unbind_request(token)

    def _apply(self, write: DeferredWrite) -> int:
        module = self.table.modules[write.module]
        base_url, unit, cells = module.upstream, write.module, None
        if self.cells.celled(write.module):
            base_url, unit, cells = self._cell_of(write)
        self._game_day_fault(unit)
        self._held_by_lever(unit)
        out = {
            **write.headers,
            headers.IDEMPOTENCY_KEY: write.tracking_id,
            headers.REQUEST_ID: write.request_id,
            headers.ACCEPTED_AT: write.accepted_at.isoformat(),
            # the module counts what it applies from here as via="replay" (module_kit.metrics)
            metrics.REPLAY_HEADER: "1",
        }
        if write.identity:
            out[headers.IDENTITY] = self.signer.get().sign(
                write.identity, audience=write.module, cells=cells
            )
        response = self._deliver(write, unit, base_url, out)
        status = response.status_code
        if (
            status >= 500
            or status in RETRY_LATER_STATUSES
            or (status == 409 and IN_PROGRESS in response.text)
        ):
            raise ReplayFailed(f"{write.module} answered {status}")
        if status >= 400:
            refusal = refusal_of(response)
            self._record(write, DeferredState.REFUSED, refusal)
            log.error(
                "deferred write %s refused by %s for good: %s %s (kept in the ledger)",
                write.tracking_id,
                write.module,
                status,
                refusal.code or "",
                extra=logs.fields(outcome=DeferredState.REFUSED.value, status=status),
            )
        else:
            self._record(write, DeferredState.APPLIED)
            log.info(
                "deferred write %s applied by %s (%s)",
                write.tracking_id,
                write.module,
                status,
                extra=logs.fields(outcome=DeferredState.APPLIED.value, status=status),
            )
        return status

    def _deliver(
        self, write: DeferredWrite, unit: str, base_url: str, out: dict[str, str]
    ) -> httpx.Response:
        """The module's answer: this region's, or, when it is down here (unreachable or a
        5xx), a peer region's. Raises :class:`ReplayFailed` when none answers."""
        target = write.path + (f"?{write.query}" if write.query else "")
        failure = ""
        here = PeerAddress(base_url, httpx.USE_CLIENT_DEFAULT)
        for where in (here, *self.elsewhere.get(unit, ())):
            try:
                response = self.client.request(
                    write.method,
                    where.base_url + target,
                    content=write.body.encode(),
                    headers=out,
                    auth=where.auth,
                )
            except httpx.TransportError as exc:
                failure = failure or f"{write.module} unreachable: {exc}"
                continue
            if response.status_code < 500:
                return response
            failure = failure or f"{write.module} answered {response.status_code}"
        raise ReplayFailed(failure)

    def _cell_of(self, write: DeferredWrite) -> tuple[str, str, tuple[tuple[str, str], ...] | None]:
        """The cell the write's key is placed in now: its URL, its name, and the driver's
        cells for the identity context. Raises :class:`ReplayFailed` (the write stays queued)
        while the key is moving or the placements cannot be read."""
        if not self.cells.refresh_if_stale():
            raise ReplayFailed(f"{write.module}: cannot read the cell placements")
        route = self.table.match(write.path)
        driver = write.identity.driver_id if write.identity is not None else None
        if route is None:
            raise ReplayFailed(f"{write.module}: no route for {write.path}")
        where = self.cells.place(
            write.module, self.cells.key_of(route, driver, write.body.encode())
        )
        if where.moving:
            raise ReplayFailed(f"{where.unit}: the key is being moved to another cell")
        claim = self.cells.cells_of(driver) if driver is not None else None
        return self.table.modules[write.module].cells[where.cell], where.unit, claim

    def _game_day_fault(self, module: str) -> None:
        """Faults set on a module hold for replays too: a module a game day has down or
        failing gets no writes from the queue; a slow one is waited for."""
        self.faults.refresh_if_stale()
        spec = self.faults.active(module)
        if spec is None:
            return
        if spec.kind is FaultKind.LATENCY:
            self.sleep(min(spec.latency_ms / 1000, REPLAY_TIMEOUT_SECONDS))
        elif spec.kind is FaultKind.BLACKHOLE or self.faults.rng.random() < spec.error_rate:
            raise ReplayFailed(f"{module}: {spec.kind.value} fault injected")

    def _held_by_lever(self, unit: str) -> None:
        """A ``fallback`` lever on the module or cell: its writes stay queued until the
        lever is released or expires (read afresh for every write, as the faults are)."""
        if self.levers is None:
            return
        self.levers.refresh()
        if self.levers.forced_fallback(unit):
            raise ReplayFailed(f"{unit}: held on its fallback by an operator's lever")

    def _record(
        self, write: DeferredWrite, state: DeferredState, refusal: DeferredRefusal | None = None
    ) -> None:
        if self.ledger is None:
            return
        try:
            self.ledger.decide(write, state, refusal)
        except LedgerError as exc:
            # Replayed again later (idempotently) until the outcome is on record.
            raise ReplayFailed(f"outcome of {write.tracking_id} not recorded: {exc}") from None


def peer_addresses(settings: GatewaySettings, table: RouteTable) -> dict[str, list[PeerAddress]]:
    """The peer regions' addresses of each critical unit (gateway.regions.peers); in AWS read
    once from each peer's SSM (a read that fails leaves the placeholders: the write then
    waits for this region's module, as without peers)."""
    out: dict[str, list[PeerAddress]] = {}
    for peer, units in peer_configs(settings, table).items():
        auth = SigV4Auth(peer) if settings.sign_upstreams else None  # signed for its region
        addresses = {unit: PeerAddress(config.upstream, auth) for unit, config in units.items()}
        if published(settings, peer):
            try:
                ModuleDirectory(str(settings.ssm_path), addresses, region=peer).refresh()
            except Exception as exc:
                log.error("could not read %s's module URLs (%r)", peer, exc)
        for unit, address in addresses.items():
            out.setdefault(unit, []).append(address)
    return out


def make_handler(replayer: Replayer | None = None) -> LambdaHandler:
    """The Lambda handler; the route table and HTTP client are built on first use."""
    state: dict[str, Replayer] = {}
    if replayer is None:  # the deployed worker (tests bring their own replayer)
        logs.setup_logging("gateway-replay")

    def get() -> Replayer:
        if replayer is not None:
            return replayer
        if "r" not in state:
            settings = GatewaySettings()
            auth = SigV4Auth(settings.aws_region) if settings.sign_upstreams else None
            ledger = (
                DeferredLedger(settings.deferred_ledger_table)
                if settings.deferred_ledger_table
                else None
            )
            # Read afresh for every write (one small query): a write is never replayed
            # on a stale view of the game day.
            faults = (
                FaultInjector(store=ControlTableFaults(settings.control_table), refresh_seconds=0)
                if settings.control_table
                else None
            )
            table = RouteTable.load(settings.routes_file)
            # Read afresh for every write too: a moving key's writes stay queued.
            placements = (
                PlacementTable(settings.placement_table) if settings.placement_table else None
            )
            state["r"] = Replayer(
                table,
                httpx.Client(timeout=REPLAY_TIMEOUT_SECONDS, auth=auth),
                SignerProvider(settings),
                ledger=ledger,
                faults=faults,
                cells=Cells(table.modules, placements, refresh_seconds=0, background=False),
                elsewhere=peer_addresses(settings, table),
                levers=(
                    ActiveLevers(LeverStore(settings.routing_table), background=False)
                    if settings.routing_table
                    else None
                ),
            )
        return state["r"]

    def record_handler(record: SQSRecord) -> int:
        return get().apply(DeferredWrite.model_validate_json(record.body))

    def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        return process_partial_response(
            event=event,
            record_handler=record_handler,
            processor=SqsFifoPartialProcessor(skip_group_on_error=True),
            context=context,
        )

    return handler


handler = make_handler()

__all__ = ["ReplayFailed", "Replayer", "handler", "make_handler"]
