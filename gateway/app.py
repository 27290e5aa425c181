"""The gateway app: builds every part and composes the request pipeline (``pipeline.py``).

``create_app(settings=None, *, transport=None, ...)``: tests pass an ``httpx`` transport
(``MockTransport``, ``ASGITransport``, or respx's mock) and clocks, so no network and no
sleeping is needed.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from gateway import aws_calls
from gateway.cells.placement import PlacementSource, PlacementTable
from gateway.cells.router import Cells
from gateway.config import GatewaySettings
from gateway.deferred import tracking
from gateway.deferred.ledger import DeferredLedger
from gateway.deferred.queue import DeferredQueue, DeferredWrites
from gateway.edge.appversion import AppVersions, warn_past_sunset
from gateway.edge.clientaddr import ClientAddress
from gateway.edge.shedding import EarlyShed, Shedder, shed_config
from gateway.fallbackstore.store import FallbackStore
from gateway.forwarding.forwarder import Forwarder
from gateway.forwarding.upstream import ModuleUpstream, counts_as_failure
from gateway.levers import ActiveLevers, LeverControl, LeverStore
from gateway.ops import levers as lever_ops
from gateway.ops import operators
from gateway.ops.apidoc import install_openapi
from gateway.ops.metrics import GatewayCollector, RequestMetrics
from gateway.ops.metrics import registry as metrics_registry
from gateway.pipeline import Forward, Step, build_pipeline, gateway_steps
from gateway.regions.control import RoutingControls, RoutingControlSource
from gateway.regions.peers import peer_configs, peer_unit, published
from gateway.regions.router import Regions
from gateway.release.router import Releases
from gateway.release.state import ControlTableReleases, ReleaseSource
from gateway.release.stats import ControlTableStats, ReleaseStats, StatsSink
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.bulkhead import Bulkhead
from gateway.resilience.fallbacks import (
    Fallback,
    GatePassLastKnownGood,
    LastKnownGood,
    LoadsLastKnownGood,
    OfflinePassVerifier,
    RevokedPasses,
    StaticDirections,
)
from gateway.resilience.faults import ControlTableFaults, FaultInjector
from gateway.resilience.fleet import ControlTableBreakers, FleetBreakers
from gateway.resilience.retry import RetryBudget
from gateway.routing.directory import ModuleDirectory
from gateway.routing.routes import ModuleConfig, RouteTable, RouteTableError
from gateway.security.auth import Authenticator, JwksKeySource, JwtAuthenticator, NoAuthenticator
from gateway.security.ratelimit import Limit, RateLimiter
from gateway.security.signer import SignerProvider
from gateway.security.sigv4 import SigV4Auth
from module_kit import http, logs
from shared_contracts.identity import Role

GC_YOUNG_THRESHOLD = 10_000


def default_authenticator(settings: GatewaySettings) -> Authenticator:
    if settings.jwks_url and settings.token_issuer and settings.client_ids:
        return JwtAuthenticator(
            JwksKeySource(settings.jwks_url),
            issuer=settings.token_issuer,
            client_ids=settings.client_ids,
        )
    return NoAuthenticator()


def rate_limits(settings: GatewaySettings) -> dict[str, Limit]:
    """Per role, plus "anonymous" for public routes (keyed by client address)."""
    return {
        role.value: Limit.parse(getattr(settings, f"rate_limit_{role.value}")) for role in Role
    } | {"anonymous": Limit.parse(settings.rate_limit_anonymous)}


def build_fallbacks(
    settings: GatewaySettings,
    *,
    wall_clock: Callable[[], float] = time.time,
    sqs: object = None,
    dynamodb: object = None,
) -> dict[str, Fallback]:
    """The fallbacks the route table may name."""
    store = (
        FallbackStore(
            settings.fallback_store_table,
            dynamodb=dynamodb,
            timeout_seconds=settings.store_timeout_seconds,
            clock=wall_clock,
        )
        if settings.fallback_store_table
        else None
    )
    loads = LoadsLastKnownGood(settings.cache_entries, clock=wall_clock, store=store)
    # Revocations seen in live gatepass answers, checked by the offline verifier too.
    revoked = RevokedPasses(settings.cache_entries, clock=wall_clock)
    queue = (
        DeferredQueue(
            settings.deferred_queue_url, sqs=sqs, timeout_seconds=settings.queue_timeout_seconds
        )
        if settings.deferred_queue_url
        else None
    )
    ledger = (
        DeferredLedger(settings.deferred_ledger_table, dynamodb=dynamodb, wall_clock=wall_clock)
        if settings.deferred_ledger_table
        else None
    )
    return {
        "last-known-good": LastKnownGood(settings.cache_entries, clock=wall_clock),
        "loads-last-known-good": loads,
        "gatepass-last-known-good": GatePassLastKnownGood(
            settings.cache_entries, clock=wall_clock, revoked=revoked, store=store
        ),
        "static-directions": StaticDirections(loads, clock=wall_clock),
        "gatepass-verify-offline": OfflinePassVerifier(
            clock=wall_clock, revoked=revoked, store=store
        ),
        "deferred": DeferredWrites(
            queue, ledger, store_timeout_seconds=settings.store_timeout_seconds
        ),
    }


def create_app(
    settings: GatewaySettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    routes: RouteTable | None = None,
    authenticator: Authenticator | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    faults: FaultInjector | None = None,
    fallbacks: dict[str, Fallback] | None = None,
    fleet: FleetBreakers | None = None,
    release_store: ReleaseSource | None = None,
    stats_store: StatsSink | None = None,
    placement_store: PlacementSource | None = None,
    routing_store: RoutingControlSource | None = None,
    lever_store: LeverStore | None = None,
) -> GatewayApp:
    settings = settings or GatewaySettings()
    # JSON lines (POWERTOOLS_SERVICE_NAME names the service). WARNING unless the access line
    # is on or LOG_LEVEL says otherwise: the INFO lines (a fallback served) come at the
    # forwarding rate when a module is down, and each costs more than a forward.
    logs.setup_logging("gateway", level="INFO" if settings.access_log else "WARNING")
    if (
        settings.fallback_store_table
        or settings.control_table
        or settings.deferred_queue_url
        or settings.ssm_path
        or settings.placement_table
        or settings.routing_table
    ):
        aws_calls.warm()  # a cold instance's first AWS calls then fit their deadlines
    table = routes or RouteTable.load(settings.routes_file)
    auth = authenticator or default_authenticator(settings)
    fallbacks = (
        fallbacks if fallbacks is not None else build_fallbacks(settings, wall_clock=wall_clock)
    )
    for route in table.routes:
        for name in route.fallback.values():
            if name not in fallbacks:
                raise RouteTableError(f"route {route.prefix} names unknown fallback {name}")
    faults = faults or FaultInjector(
        store=ControlTableFaults(settings.control_table) if settings.control_table else None,
        clock=wall_clock,
        store_timeout_seconds=settings.store_timeout_seconds,
    )
    if fleet is None and settings.control_table and settings.breaker_fleet:
        fleet = FleetBreakers(
            ControlTableBreakers(settings.control_table),
            clock=wall_clock,
            refresh_seconds=settings.breaker_refresh_seconds,
            stale_seconds=settings.breaker_stale_seconds,
            store_timeout_seconds=settings.breaker_store_timeout_seconds,
            refresh_wait_seconds=settings.breaker_refresh_wait_seconds,
            sleep=asyncio.sleep if settings.breaker_refresh == "background" else None,
        )
    pool = transport or upstream_transport(settings)
    sigv4 = SigV4Auth(settings.aws_region) if settings.sign_upstreams else None

    def build_upstream(
        module: ModuleConfig, breaker_name: str, auth: SigV4Auth | None = sigv4
    ) -> ModuleUpstream:
        return ModuleUpstream(
            module,
            pool,
            name=breaker_name,
            breaker=CircuitBreaker(
                breaker_name, module.breaker, is_failure=counts_as_failure, clock=clock, fleet=fleet
            ),
            bulkhead=Bulkhead(breaker_name, module.bulkhead),
            budget=RetryBudget(module.retry_budget, clock=clock),
            retry=module.retry,
            faults=faults,
            auth=auth,
            clock=clock,
            sleep=sleep,
        )

    # One upstream per module, and per cell of a celled one ("loads/cell-1"): each its own
    # breaker, bulkhead and retry budget, so one cell's failures never open another's.
    units = table.units()
    upstreams = {name: build_upstream(module, name) for name, module in units.items()}
    if placement_store is None and settings.placement_table:
        placement_store = PlacementTable(settings.placement_table)
    cells = Cells(
        table.modules,
        placement_store,
        clock=clock,
        refresh_seconds=settings.placement_refresh_seconds,
        timeout_seconds=settings.store_timeout_seconds,
    )

    def canary_upstream(name: str, version: str, url: str) -> ModuleUpstream:
        """A canary version's own upstream: its breaker (``loads@<version>``, or a cell's
        ``loads/cell-1@<version>``), bulkhead and retry budget, so its failures never open
        the stable version's breaker."""
        config = units[name].model_copy(update={"upstream": url})
        return build_upstream(config, f"{name}@{version}")

    if settings.control_table and settings.releases:
        release_store = release_store or ControlTableReleases(settings.control_table)
        stats_store = stats_store or ControlTableStats(settings.control_table)
    releases = (
        Releases(
            release_store,
            upstreams,
            canary_upstream,
            stats=ReleaseStats(
                stats_store,
                wall_clock=wall_clock,
                flush_seconds=settings.release_stats_flush_seconds,
                timeout_seconds=settings.store_timeout_seconds,
            ),
            clock=clock,
            refresh_seconds=settings.release_refresh_seconds,
            timeout_seconds=settings.store_timeout_seconds,
        )
        if release_store is not None
        else None
    )
    if routing_store is None and settings.routing_table:
        routing_store = RoutingControls(settings.routing_table)
    peers = peer_upstreams(settings, table, build_upstream)
    regions = Regions(
        settings.aws_region,
        settings.peers,
        peers,
        routing_store,
        directories=peer_directories(settings, peers, clock),
        clock=clock,
        refresh_seconds=settings.routing_refresh_seconds,
        timeout_seconds=settings.store_timeout_seconds,
    )
    # Operators' emergency levers, in the routing-control table beside the region controls:
    # each instance's copy (forced fallbacks, shed tiers) and the operator API's side.
    if lever_store is None and settings.routing_table:
        lever_store = LeverStore(settings.routing_table)
    levers = ActiveLevers(
        lever_store,
        wall_clock=wall_clock,
        clock=clock,
        refresh_seconds=settings.routing_refresh_seconds,
        timeout_seconds=settings.store_timeout_seconds,
    )
    lever_control = (
        LeverControl(
            lever_store,
            table,
            routing=routing_store if isinstance(routing_store, RoutingControls) else None,
            regions=regions.regions,
            clock=wall_clock,
        )
        if lever_store is not None
        else None
    )
    signer = SignerProvider(settings)
    directory = (
        ModuleDirectory(
            settings.ssm_path,
            upstreams,
            clock=clock,
            refresh_seconds=settings.upstream_refresh_seconds,
            timeout_seconds=settings.store_timeout_seconds,
        )
        if settings.ssm_path
        else None
    )
    forwarder = Forwarder(
        upstreams,
        fallbacks,
        signer,
        wall_clock=wall_clock,
        directory=directory,
        releases=releases,
        cells=cells if cells.modules else None,
        regions=regions if regions.failover else None,
        levers=levers if lever_store is not None else None,
    )
    limiter = RateLimiter(clock=clock)
    limits = rate_limits(settings)
    client_address = ClientAddress(settings.trusted_proxies)
    # Load shedding by tier (gateway.edge.shedding); operators' levers set forced_tiers.
    # Its lag probe measures the real event loop: the real clock and sleep, not the tests'.
    shedder = Shedder(shed_config(settings), forced_tiers=levers.shed_tiers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything built so far lives as long as the process: keep it out of the
        # collector's generations, which cuts its pauses from the tail latency.
        gc.collect()
        gc.freeze()
        # Each forward allocates a few hundred short-lived objects: collect the young
        # generation every GC_YOUNG_THRESHOLD allocations rather than every 700.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        if releases is not None:
            await releases.load_at_start()  # a restarted instance routes as the fleet does
        await cells.load_at_start()  # and sends a moved driver to their cell, not the default
        await regions.load_at_start()  # and an evacuated region's requests to a serving one
        await levers.load_at_start()  # and holds the levers operators pulled
        shedder.start()  # the event loop's lag probe (not in Lambda)
        yield
        await shedder.stop()
        if fleet is not None:
            fleet.close_loop()
        await pool.aclose()

    # redirect_slashes off: Starlette would answer /ops/status/ with a redirect to the
    # Host header's host (an open redirect); the gateway never redirects by itself.
    app = FastAPI(
        title="Relay gateway",
        version="1",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.routes = table
    app.state.authenticator = auth
    app.state.upstreams = upstreams
    app.state.forwarder = forwarder
    app.state.releases = releases  # the modules' canary releases, or None
    app.state.cells = cells  # the celled modules' cells and placements
    app.state.regions = regions  # this region, its peers and the routing controls
    app.state.routing_store = routing_store  # where operators pull the region lever, or None
    app.state.faults = faults
    app.state.levers = levers  # the levers in force, as this instance last read them
    app.state.lever_control = lever_control  # where operators pull them, or None
    app.state.fleet = fleet  # the breakers' shared state, or None (each decides alone)
    app.state.limiter = limiter
    app.state.limits = limits
    app.state.shedder = shedder  # load shedding: in flight, loop lag, shed per tier
    app.state.ledger = next(
        (f.ledger for f in fallbacks.values() if isinstance(f, DeferredWrites)), None
    )
    # GET /metrics and the dashboard's summary: counts per request, the rest read when scraped
    metrics = RequestMetrics()
    app.state.metrics = GatewayCollector(
        metrics,
        lambda: every_upstream(upstreams, releases, regions),
        shedder=lambda: getattr(app.state, "shedder", None),
        levers=lambda: getattr(app.state, "levers", None),
    )
    app.state.metrics_registry = metrics_registry(app.state.metrics)
    # The oldest app each route serves, deprecated operations, requests by app version
    app_versions = AppVersions(table, metrics)
    warn_past_sunset(app_versions, wall_clock)
    app.state.app_versions = app_versions

    @app.get("/healthz", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(operators.router)
    app.include_router(lever_ops.router)
    app.include_router(operators.metrics_router)
    app.include_router(tracking.router)
    install_openapi(app)  # the mobile API's contract, GET /openapi.json

    http.install(app, guard=False)  # the problem answers; the guard is the pipeline's first step
    steps = gateway_steps(
        api=app,
        table=table,
        authenticator=auth,
        limiter=limiter,
        limits=limits,
        client_address=client_address,
        max_body_bytes=settings.max_body_bytes,
        header_limits=settings.header_limits,
        region=settings.aws_region,
        metrics=metrics,
        shedder=shedder,
        app_versions=app_versions,
    )
    forward = Forward(forwarder, access_log=settings.access_log, metrics=metrics)
    early = EarlyShed(
        shedder,
        table,
        answer_headers=((b"relay-region", settings.aws_region.encode()),),
        metrics=metrics,
    )
    return GatewayApp(app, steps, forward, early)


def every_upstream(
    upstreams: dict[str, ModuleUpstream], releases: Releases | None, regions: Regions
) -> list[ModuleUpstream]:
    """Every upstream this instance may call now: its modules' (and cells'), the canaries
    of releases running, and the peer regions' (the metrics' units)."""
    out = list(upstreams.values())
    if releases is not None:
        out.extend(releases.canaries.values())
    out.extend(u for peers in regions.failover.values() for _, u in peers)
    return out


class GatewayApp:
    """The gateway's ASGI entry point: the request pipeline (``gateway/pipeline.py``). Its
    steps send the gateway's own routes (health, ops, OpenAPI, deferred status) to ``api``,
    the FastAPI app, and forward everything else without FastAPI's router, dependency and
    middleware machinery, a large share of a forward's CPU. ``state`` is ``api.state``."""

    def __init__(
        self,
        api: FastAPI,
        steps: list[Step],
        forward: Forward,
        early_shed: EarlyShed | None = None,
    ) -> None:
        self.api = api
        self.state = api.state
        self.steps = steps
        self.asgi = build_pipeline(steps, forward)
        # the shed answers the gateway's own server gives before the pipeline runs
        self.early_shed = early_shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)


def peer_upstreams(
    settings: GatewaySettings,
    table: RouteTable,
    build: Callable[[ModuleConfig, str, SigV4Auth | None], ModuleUpstream],
) -> dict[str, dict[str, ModuleUpstream]]:
    """Each peer region's upstreams of the critical modules (``us-west-2:loads/cell-1``),
    by the local unit they stand in for, each with its own breaker, bulkhead and budget."""
    return {
        peer: {
            unit: build(
                config,
                peer_unit(peer, unit),
                SigV4Auth(peer) if settings.sign_upstreams else None,
            )
            for unit, config in units.items()
        }
        for peer, units in peer_configs(settings, table).items()
    }


def peer_directories(
    settings: GatewaySettings,
    peers: dict[str, dict[str, ModuleUpstream]],
    clock: Callable[[], float],
) -> list[ModuleDirectory]:
    """In AWS: each peer's module URLs, read from that region's SSM as the local ones are
    from this region's (gateway.regions.peers)."""
    return [
        ModuleDirectory(
            str(settings.ssm_path),
            units,
            region=peer,
            clock=clock,
            refresh_seconds=settings.upstream_refresh_seconds,
            timeout_seconds=settings.store_timeout_seconds,
        )
        for peer, units in peers.items()
        if published(settings, peer) and units
    ]


def upstream_transport(settings: GatewaySettings) -> httpx.AsyncBaseTransport:
    """The shared connection pool to the modules. "keepalive": the gateway's own HTTP/1.1
    transport under httpx's API (an O(1) pool, llhttp parsing); "httpcore": httpx's own
    (the one respx mocks in tests), whose pool scans every connection on every request."""
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry_seconds,
    )
    if settings.upstream_transport == "keepalive":
        from gateway.forwarding.transport import KeepAliveTransport

        return KeepAliveTransport(limits=limits)
    return httpx.AsyncHTTPTransport(limits=limits)
