"""Synthetic drivers for a local release: a bounded stream of reads through the gateway,
so a canary has calls to be judged on when nobody else is using the local stack (Flagger's
load tester plays the same part).

Each driver (``D-9000``, ``D-9001``, ...) has its own token, so the gateway's sticky
routing sends a share of them to the canary as it would real drivers. Requests go to
127.0.0.1 only, at most ``rate`` a second, each with a deadline, until stopped. What each
request got is counted by status (and ``"error"`` for no answer) for the caller to show.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

# One read per module that any driver may make (a 4xx is an answer too: the contract check
# and the analysis both count it as one).
READS = {
    "loads": "/loads",
    "gatepass": "/gatepass",
    "message": "/message",
    "navigate": "/navigate?load_id=L-0001&lat=41.88&lon=-87.63",
}
DEFAULT_DRIVERS = 1000  # at 1%, about ten of them on the canary
DEFAULT_RATE = 60.0  # requests a second, all drivers together
REQUEST_TIMEOUT_SECONDS = 5.0


def synthetic_drivers(count: int) -> list[str]:
    return [f"D-{9000 + n}" for n in range(count)]


class SyntheticTraffic:
    """Reads of ``module`` as ``drivers`` through ``gateway_url``, on a thread, until
    :meth:`stop` (or the ``with`` block ends)."""

    def __init__(
        self,
        gateway_url: str,
        modules: list[str],
        token_for: Callable[[str], str],
        *,
        drivers: int = DEFAULT_DRIVERS,
        rate: float = DEFAULT_RATE,
        verify: bool | str = True,
    ) -> None:
        if urlsplit(gateway_url).hostname != "127.0.0.1":
            raise ValueError(f"synthetic traffic goes to 127.0.0.1 only, not {gateway_url}")
        unknown = [m for m in modules if m not in READS]
        if unknown:
            raise ValueError(f"no synthetic read for {', '.join(unknown)}")
        self.gateway_url = gateway_url.rstrip("/")
        self.paths = [READS[m] for m in modules]
        self.drivers = synthetic_drivers(drivers)
        self.tokens = {d: token_for(d) for d in self.drivers}
        self.interval = 1.0 / rate
        self.verify = verify
        self.statuses: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SyntheticTraffic:
        self._thread = threading.Thread(target=self._run, name="relay-traffic", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_SECONDS * 2)
            self._thread = None

    def _run(self) -> None:
        n = 0
        with httpx.Client(timeout=REQUEST_TIMEOUT_SECONDS, verify=self.verify) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                driver = self.drivers[n % len(self.drivers)]
                path = self.paths[n % len(self.paths)]
                n += 1
                try:
                    status = str(
                        client.get(
                            self.gateway_url + path,
                            headers={"authorization": f"Bearer {self.tokens[driver]}"},
                        ).status_code
                    )
                except httpx.HTTPError:
                    status = "error"
                self.statuses[status] += 1
                next_at += self.interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))
