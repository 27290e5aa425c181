"""The operators' console: a dashboard page over the gateway's ops API, on 127.0.0.1.

``relay dev`` runs it as one more supervised process (``console``) and prints its address.
The page (``static/``: ``index.html``, ``app.js``, ``style.css``; plain JS, SVG charts, no
build step, nothing from a CDN) asks for an ops token, keeps it in ``sessionStorage`` and
sends it on every call:

- ``/api/gateway/<path>`` is forwarded to the gateway's ``/ops/<path>`` with the caller's
  ``Authorization`` (GET, POST, PUT, DELETE; a deadline on every call): the gateway decides.
  After a change the gateway accepted (pulling a lever, clearing a fault) the console reads
  the gateway again before it answers, so the page's next refresh shows the change.
- ``/api/dashboard`` (the newest ``/ops/status`` and the request rates of the last
  minutes) and ``/api/io`` (the critical input/output metrics, :mod:`relay.console.io`) are
  the console's own: refused (401) unless the gateway accepts the token, asked with
  ``GET /ops/status`` and remembered for ``token_check_seconds``.

In the background the console polls the gateway every ``poll_seconds`` (``/ops/status`` and
``/ops/metrics/summary``) with the token ``relay dev`` hands it (``RELAY_CONSOLE_TOKEN``),
or, without one or once the gateway refuses it, the first token the gateway accepts from
the page, into a ring buffer of ``history_seconds``
(:class:`relay.console.history.History`): the charts have their history when the page
opens. The page reads the console, never the gateway, on its refreshes: one poll serves
every open tab. The poll's two calls every 2 s take half of an ops identity's rate limit
(``RELAY_RATE_LIMIT_OPS``, 2 per second), so the console keeps the token it polls with
rather than switching to the newest an operator pasted: with its own token, the operator's
actions have their identity's whole limit.

Run alone: ``python -m relay.console --port 8001`` with ``RELAY_CONSOLE_GATEWAY_URL`` (and
optionally ``RELAY_CONSOLE_LOG_DIR``, ``RELAY_CONSOLE_TOKEN``, ``RELAY_CONSOLE_CA_FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .history import (
    DEFAULT_HISTORY_SECONDS,
    History,
    breakers_from_status,
    counts_from_status,
    counts_from_summary,
)
from .io import critical_io

log = logging.getLogger("relay.console")

DEFAULT_POLL_SECONDS = 2.0  # the background poll, and the page's own refresh
DEFAULT_CALL_TIMEOUT_SECONDS = 3.0  # every call to the gateway
DEFAULT_TOKEN_CHECK_SECONDS = 10.0  # a token the gateway accepted is not asked about again
REJECTED_TOKEN_SECONDS = 2.0  # nor one it refused, for this long
SUMMARY_RETRY_SECONDS = 30.0  # a gateway without /ops/metrics/summary is asked again after
MAX_REMEMBERED_TOKENS = 64
FORWARDED_METHODS = ("GET", "POST", "PUT", "DELETE")
FORWARDED_HEADERS = ("authorization", "content-type", "accept", "idempotency-key")
# what may follow /api/gateway/: an ops path, percent-escapes kept (a lever id "a:b/c")
FORWARD_PATH = re.compile(r"^[A-Za-z0-9._~%:@!$&'()*+,;=-]+(/[A-Za-z0-9._~%:@!$&'()*+,;=-]+)*$")
STATIC_DIR = Path(__file__).parent / "static"
# The names the page is opened by: a page of another site whose name was rebound to
# 127.0.0.1 (DNS rebinding) is answered 400, never the console.
DEFAULT_ALLOWED_HOSTS = ("127.0.0.1", "localhost", "::1")

ENV_GATEWAY_URL = "RELAY_CONSOLE_GATEWAY_URL"
ENV_LOG_DIR = "RELAY_CONSOLE_LOG_DIR"
ENV_TOKEN = "RELAY_CONSOLE_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_CA_FILE = "RELAY_CONSOLE_CA_FILE"

PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class ConsoleSettings:
    gateway_url: str
    log_dir: Path | None = None  # the modules' logs, for the EMF reader (relay.emf)
    token: str | None = None  # an ops token to poll with before the page sends one
    ca_file: Path | None = None  # the gateway's self-signed certificate (relay dev --tls)
    poll_seconds: float = DEFAULT_POLL_SECONDS
    history_seconds: float = DEFAULT_HISTORY_SECONDS
    call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS
    token_check_seconds: float = DEFAULT_TOKEN_CHECK_SECONDS
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS

    def __post_init__(self) -> None:
        if not self.gateway_url.startswith(("http://", "https://")):
            raise ValueError(f"gateway_url must be an http(s) URL, not {self.gateway_url!r}")
        for name in ("poll_seconds", "history_seconds", "call_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.token_check_seconds < 0:
            raise ValueError("token_check_seconds must not be negative")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ConsoleSettings:
        url = env.get(ENV_GATEWAY_URL)
        if not url:
            raise ValueError(f"{ENV_GATEWAY_URL} names the gateway the console watches")
        return cls(
            gateway_url=url,
            log_dir=Path(env[ENV_LOG_DIR]) if env.get(ENV_LOG_DIR) else None,
            token=env.get(ENV_TOKEN) or None,
            ca_file=Path(env[ENV_CA_FILE]) if env.get(ENV_CA_FILE) else None,
        )


class TokenRejected(Exception):
    """The gateway does not accept the token for its ops routes."""


class GatewayUnreachable(Exception):
    """The gateway did not answer (in time, or at all) to check a token."""


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"type": f"urn:relay:problem:{code}", "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Console:
    """The console's state: the gateway client, the token it polls with, the history."""

    def __init__(
        self,
        settings: ConsoleSettings,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self.monotonic = monotonic
        self.history = History(settings.history_seconds)
        self.token: str | None = settings.token
        self.poll_error: str | None = None
        self.source: str | None = None  # "metrics-summary" or "status"
        self.latest: dict[str, Any] = {}
        self.status: dict[str, Any] | None = None  # the newest /ops/status
        self.status_at: float | None = None
        self.polls = 0
        self._polling = asyncio.Lock()
        self._checked: dict[str, tuple[bool, float]] = {}  # digest -> (accepted, until)
        self._summary_missing_until = 0.0

    # --- tokens ----------------------------------------------------------------------

    async def check(self, token: str) -> None:
        """Return if the gateway accepts ``token`` for ``/ops``; else TokenRejected (or
        GatewayUnreachable). The answer is remembered briefly."""
        key, now = _digest(token), self.monotonic()
        known = self._checked.get(key)
        if known is None or known[1] <= now:
            try:
                r = await self.client.get("/ops/status", headers=_auth(token))
            except httpx.HTTPError as exc:
                raise GatewayUnreachable(f"the gateway did not answer: {exc!r}") from None
            if r.status_code in (401, 403):
                known = (False, now + REJECTED_TOKEN_SECONDS)
            elif r.status_code in (200, 429):  # 429: an ops identity, over its rate limit
                known = (True, now + self.settings.token_check_seconds)
                if r.status_code == 200:
                    self.status, self.status_at = r.json(), self.clock()
            else:
                raise GatewayUnreachable(f"the gateway answered {r.status_code} to /ops/status")
            if len(self._checked) >= MAX_REMEMBERED_TOKENS:
                self._checked.clear()
            self._checked[key] = known
        if not known[0]:
            raise TokenRejected("the gateway does not accept this token for its ops routes")
        self.accept(token)

    def accept(self, token: str) -> None:
        """The gateway accepted ``token``: poll with it if the console has none (none was
        handed to it, or the gateway refused the one it had). A token it polls with is kept
        while the gateway accepts it (see the module's docstring)."""
        if self.token is None:
            self.token = token
            self.poll_error = None

    # --- polling ---------------------------------------------------------------------

    async def poll_once(self) -> None:
        """Read the gateway once into the history (or say why not in ``poll_error``)."""
        async with self._polling:
            await self._poll()

    async def _poll(self) -> None:
        token = self.token
        if token is None:
            self.poll_error = "no ops token yet: open the page and paste one"
            return
        headers = _auth(token)
        now = self.clock()
        ask_summary = self.monotonic() >= self._summary_missing_until
        calls = [self.client.get("/ops/status", headers=headers)]
        if ask_summary:
            calls.append(self.client.get("/ops/metrics/summary", headers=headers))
        answers = await asyncio.gather(*calls, return_exceptions=True)
        status_r = answers[0]
        summary_r = answers[1] if ask_summary else None
        if isinstance(status_r, BaseException):
            self.poll_error = f"the gateway did not answer: {status_r!r}"
            return
        if status_r.status_code in (401, 403):
            if self.token == token:
                self.token = None
            self.poll_error = "the gateway refused the ops token (expired?): paste a new one"
            return
        if status_r.status_code != 200:
            self.poll_error = f"the gateway answered {status_r.status_code} to /ops/status"
            return
        status = status_r.json()
        self.status, self.status_at = status, now
        summary = None
        if isinstance(summary_r, httpx.Response):
            if summary_r.status_code == 200:
                summary = summary_r.json()
            elif summary_r.status_code in (404, 405):
                self._summary_missing_until = self.monotonic() + SUMMARY_RETRY_SECONDS
        if summary is not None:
            self.source = "metrics-summary"
            instance = str(summary.get("instance") or "gateway")
            counts = counts_from_summary(summary)
            breakers = {
                **breakers_from_status(status),
                **{str(k): str(v) for k, v in (summary.get("breakers") or {}).items()},
            }
        else:
            self.source = "status"
            instance, counts = "status", counts_from_status(status)
            breakers = breakers_from_status(status)
        self.history.record(now, instance, counts, breakers)
        self.latest = {
            "at": now,
            "instance": instance,
            "in_flight": (summary or {}).get("in_flight"),
            "shed": (summary or {}).get("shed") or (status.get("shedding") or {}),
            "breakers": breakers,
        }
        self.polls += 1
        self.poll_error = None

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every ``poll_seconds`` until ``stop``; a failed poll is said, never fatal."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as exc:
                log.exception("console poll failed")
                self.poll_error = f"poll failed: {exc!r}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_seconds)

    def dashboard_view(self) -> dict[str, Any]:
        """What the page shows: the gateway's newest status and the history."""
        return {
            "gateway_url": self.settings.gateway_url,
            "status": self.status,
            "status_at": self.status_at,
            "history": self.history_view(),
        }

    def history_view(self) -> dict[str, Any]:
        return {
            "now": round(self.clock(), 3),
            "window_seconds": self.settings.history_seconds,
            "poll_seconds": self.settings.poll_seconds,
            "source": self.source,
            "poll_error": self.poll_error,
            "polls": self.polls,
            "instances": self.history.totals.instances,
            "units": self.history.units(),
            "latest": self.latest,
            "series": self.history.series(),
        }


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _verify(settings: ConsoleSettings) -> ssl.SSLContext | bool:
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return True


class _PageHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in PAGE_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def create_app(
    settings: ConsoleSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    poll: bool = True,
) -> Starlette:
    """The console app. ``transport`` replaces the network to the gateway (tests);
    ``poll=False`` leaves the background poll to the caller (``app.state.console``)."""
    settings = settings or ConsoleSettings.from_env()

    async def own(request: Request, view: Callable[[Console], Any]) -> Response:
        console: Console = request.app.state.console
        token = _bearer(request)
        if token is None:
            return _problem(401, "unauthenticated", "an ops token is needed (Bearer)")
        try:
            await console.check(token)
        except TokenRejected as exc:
            return _problem(401, "unauthenticated", str(exc))
        except GatewayUnreachable as exc:
            return _problem(503, "unavailable", str(exc))
        result = view(console)
        if asyncio.iscoroutine(result):
            result = await result
        return JSONResponse(result)

    async def dashboard(request: Request) -> Response:
        return await own(request, lambda c: c.dashboard_view())

    async def io(request: Request) -> Response:
        log_dir = settings.log_dir
        return await own(request, lambda c: asyncio.to_thread(critical_io, log_dir))

    async def forward(request: Request) -> Response:
        console: Console = request.app.state.console
        raw = request.scope.get("raw_path") or request.url.path.encode()
        path = raw.decode("latin-1").split("?", 1)[0].removeprefix("/api/gateway/")
        if not FORWARD_PATH.match(path) or ".." in path.split("/"):
            return _problem(404, "not-found", "no such ops path")
        token = _bearer(request)
        if token is None:
            return _problem(401, "unauthenticated", "an ops token is needed (Bearer)")
        headers = {h: v for h in FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
        url = "/ops/" + path + (f"?{request.url.query}" if request.url.query else "")
        try:
            r = await console.client.request(
                request.method, url, headers=headers, content=await request.body()
            )
        except httpx.HTTPError as exc:
            return _problem(502, "bad-gateway", f"the gateway did not answer: {exc!r}")
        if r.status_code < 400:
            console.accept(token)
            if request.method != "GET":  # the page's next refresh shows the change
                await console.poll_once()
        out = {"content-type": ct} if (ct := r.headers.get("content-type")) else {}
        if r.headers.get("retry-after"):
            out["retry-after"] = r.headers["retry-after"]
        if r.status_code in (204, 304):
            return Response(status_code=r.status_code, headers=out)
        return Response(r.content, status_code=r.status_code, headers=out)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            base_url=settings.gateway_url,
            timeout=settings.call_timeout_seconds,
            transport=transport,
            verify=_verify(settings),
        ) as client:
            console = Console(settings, client, clock=clock)
            app.state.console = console
            stop = asyncio.Event()
            task = asyncio.create_task(console.run(stop)) if poll else None
            try:
                yield
            finally:
                stop.set()
                if task is not None:
                    await task

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/dashboard", dashboard),
            Route("/api/io", io),
            Route("/api/gateway/{path:path}", forward, methods=list(FORWARDED_METHODS)),
            Mount("/", StaticFiles(directory=STATIC_DIR, html=True)),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(settings.allowed_hosts)),
            Middleware(_PageHeaders),
        ],
        lifespan=lifespan,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="The operators' console (dashboard page).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    uvicorn.run(
        create_app(ConsoleSettings.from_env()),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
    )
