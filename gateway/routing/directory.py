"""Where each module is: its URL as its own stack publishes it in SSM, kept current.

Each module's stack publishes its function URL as ``/relay/<stage>/<module>/url``
(docs/deploy.md, "Stacks and parameters"). The gateway starts from the URLs its own stack
resolved when it deployed (``RELAY_UPSTREAM_<MODULE>``, what routes.toml names) and, with
``RELAY_SSM_PATH`` set, reads the parameters again every ``refresh_seconds``: a module whose
stack was replaced (a new URL) is reached without deploying the gateway.

The read happens in the background on the request path, on the AWS thread pool with a
deadline, so SSM being slow or down never slows or fails a request: the last URLs known
stay in force, and a value that is not an http(s) URL is ignored (logged).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway import aws_calls

DEFAULT_REFRESH_SECONDS = 60.0
DEFAULT_TIMEOUT_SECONDS = 0.5
SSM_NAMES_PER_CALL = 10  # GetParameters takes at most ten names

log = logging.getLogger("relay.gateway.directory")


class Rebasable(Protocol):
    """An upstream whose base URL can change (``ModuleUpstream``)."""

    base_url: str

    def rebase(self, url: str) -> None: ...


def url_parameter(path: str, module: str) -> str:
    """The SSM parameter a module's stack publishes its URL under."""
    return f"{path.rstrip('/')}/{module}/url"


class ModuleDirectory:
    """Keeps ``upstreams``' base URLs equal to the modules' published URLs."""

    def __init__(
        self,
        path: str,
        upstreams: Mapping[str, Rebasable],
        *,
        ssm: Any = None,
        region: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.upstreams = upstreams
        self.names = {url_parameter(path, m): m for m in upstreams}
        self.clock = clock
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._ssm = ssm
        self.region = region  # another region's parameters (a peer's), else this one's
        self._checked_at = -math.inf
        self._refreshing: asyncio.Future[None] | None = None

    @property
    def ssm(self) -> Any:
        if self._ssm is None:
            self._ssm = aws_calls.client("ssm", region_name=self.region)
        return self._ssm

    def refresh(self) -> None:
        """Read every module's URL now and rebase the upstreams whose URL changed."""
        names = sorted(self.names)
        for start in range(0, len(names), SSM_NAMES_PER_CALL):
            answer = self.ssm.get_parameters(Names=names[start : start + SSM_NAMES_PER_CALL])
            for parameter in answer.get("Parameters", []):
                self._apply(self.names[parameter["Name"]], parameter["Value"])
            for name in answer.get("InvalidParameters", []):
                log.error("module URL parameter %s does not exist; keeping the last URL", name)

    def _apply(self, module: str, url: str) -> None:
        url = url.rstrip("/")
        upstream = self.upstreams[module]
        if url == upstream.base_url:
            return
        if not url.startswith(("https://", "http://")):
            log.error("module %s: published URL %r is not http(s); ignored", module, url)
            return
        log.warning("module %s is now at %s (was %s)", module, url, upstream.base_url)
        upstream.rebase(url)

    def keep_current(self) -> asyncio.Future[None] | None:
        """On the request path: start a background read once per period (one at a time;
        a failed read waits for the next period too). Returns the read it started."""
        if self.clock() - self._checked_at < self.refresh_seconds or self._refreshing:
            return None
        self._checked_at = self.clock()
        self._refreshing = asyncio.ensure_future(
            aws_calls.call(self.refresh, timeout=self.timeout_seconds, what="SSM")
        )
        self._refreshing.add_done_callback(self._done)
        return self._refreshing

    def _done(self, future: asyncio.Future[None]) -> None:
        self._refreshing = None
        if not future.cancelled() and future.exception() is not None:
            log.error("could not read module URLs (%r); keeping the last", future.exception())
