"""The mobile app as a consumer: what each supported version sends and reads, recorded once.

Apps in the field cannot be updated by force, so what each released version expects stays
a contract for as long as the version is supported: ``contracts/pacts/relay-app-<major.minor>
-<provider>.json``, one file per module the app calls (through the gateway, which forwards
the paths unchanged: gateway/routing/routes.toml). They are recorded from the descriptions
below when a version is released and never regenerated: today's code must honour what a
5.0 app asks, not the other way round. The modules' verification replays every one.

To record a new version: add its :class:`AppVersion` to :data:`VERSIONS`, then::

    RELAY_RECORD_APP_PACTS=1 .venv/bin/pytest tests/contracts/test_app_pacts.py

which writes the files of versions that have none, and never touches existing ones.

What changed between versions (each reads only what it uses):
- 5.0: loads (status, stops and windows), a load's events, its gate pass (QR payload and
  validity), directions (destination, distance, ETA), the inbox and sending a message.
- 5.1: the stop being visited (``current_stop``) and the load's ``reference``; entry
  instructions and whether the ETA is on time; a pass's ``revoked``; the inbox paged
  (``?limit=``).
- 5.2: every write carries an ``Idempotency-Key`` (retries are applied once); the load's
  ``version`` and ``trailer``; dock hours; a pass's ``valid_from``; which load a message is
  about (``load_id``, also sent with the driver's messages).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pact import Pact, match

from relay.devissuer import DevIssuer
from shared_contracts.identity import Role
from tests.contracts import states
from tests.contracts.pacts import BEARER_PATTERN, ISO_DATETIME, PACTS

APP_PROVIDERS = ("loads", "gatepass", "navigate", "message")
RECORD_VARIABLE = "RELAY_RECORD_APP_PACTS"
KEY_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
JSON = "application/json"


@dataclass(frozen=True)
class AppVersion:
    """One released app version: its ``Relay-App-Version`` and what it reads beyond 5.0."""

    version: str  # major.minor: the consumer is relay-app-<version>
    release: str  # the full version the app sends in Relay-App-Version
    idempotency_keys: bool = False  # sends Idempotency-Key on every write
    reads: frozenset[str] = field(default_factory=frozenset)

    @property
    def consumer(self) -> str:
        return f"relay-app-{self.version}"


_READS_5_1 = frozenset({"current_stop", "reference", "entry_instructions", "on_time", "revoked"})
VERSIONS = {
    "5.0": AppVersion("5.0", "5.0.4"),
    "5.1": AppVersion("5.1", "5.1.2", reads=_READS_5_1 | {"inbox_paging"}),
    "5.2": AppVersion(
        "5.2",
        "5.2.0",
        idempotency_keys=True,
        reads=_READS_5_1
        | {"inbox_paging", "load_version", "trailer", "dock_hours", "valid_from", "message_load"},
    ),
}


@dataclass
class AppCall:
    """One request the app makes, with the answer it reads."""

    description: str
    state: str | None
    method: str
    path: str
    status: int
    answer: Any
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    key: str | None = None  # the Idempotency-Key, if this version sends one


def timestamp() -> Any:
    return match.regex("2026-11-22T09:00:00Z", regex=ISO_DATETIME)


def _when(app: AppVersion, feature: str, fields: dict[str, Any]) -> dict[str, Any]:
    return fields if feature in app.reads else {}


def load_calls(app: AppVersion) -> list[AppCall]:
    stop = {
        "seq": match.integer(1),
        "kind": match.regex("pickup", regex=r"^(pickup|delivery)$"),
        "facility": {"name": match.like("Chicago Cross-Dock"), "address": match.like("Pulaski")},
        "window_start": timestamp(),
        "window_end": timestamp(),
    }
    load = {
        "load_id": match.like(states.LOAD),
        "status": match.regex("assigned", regex=r"^(assigned|at_stop|in_transit|delivered)$"),
        "stops": match.each_like(stop, min=2),
        **_when(app, "current_stop", {"current_stop": match.integer(1)}),
        **_when(app, "reference", {"reference": match.like("PO-1")}),
        **_when(app, "load_version", {"version": match.integer(1)}),
        **_when(app, "trailer", {"trailer": match.like("TRL-53-0042")}),
    }
    event = {
        "seq": match.integer(1),
        "kind": "arrived",
        "load": {
            "load_id": match.like(states.LOAD),
            "status": "at_stop",
            **_when(app, "current_stop", {"current_stop": match.integer(1)}),
            **_when(app, "load_version", {"version": match.integer(2)}),
        },
    }
    return [
        AppCall(
            "the app lists the driver's loads",
            states.LOAD_ASSIGNED,
            "GET",
            "/loads",
            200,
            {"items": match.each_like(load)},
        ),
        AppCall(
            "the app opens a load", states.LOAD_ASSIGNED, "GET", f"/loads/{states.LOAD}", 200, load
        ),
        AppCall(
            "the driver reports arriving at the pickup",
            states.LOAD_ASSIGNED,
            "POST",
            f"/loads/{states.LOAD}/events",
            201,
            event,
            body={"kind": "arrived", "stop_seq": 1},
            key=f"app-{app.version.replace('.', '')}-arrived-L1-1"
            if app.idempotency_keys
            else None,
        ),
    ]


def gatepass_calls(app: AppVersion) -> list[AppCall]:
    gate_pass = {
        "pass_id": match.regex("GP-1a2b3c4d", regex=r"^GP-[A-Za-z0-9_-]+$"),
        "load_id": match.like(states.LOAD),
        "facility_id": match.like(states.ROUTE[0]),
        "qr_payload": match.like("relay-pass:eyJhbGciOiJFUzI1NiJ9.e30.sig"),
        "valid_until": timestamp(),
        **_when(app, "revoked", {"revoked": match.boolean(False)}),
        **_when(app, "valid_from", {"valid_from": timestamp()}),
    }
    return [
        AppCall(
            "the app asks for a gate pass for the pickup",
            states.LOAD_ASSIGNED,
            "POST",
            "/gatepass",
            201,
            gate_pass,
            body={"load_id": states.LOAD, "facility_id": states.ROUTE[0]},
            key=f"app-{app.version.replace('.', '')}-pass-L1-FCHI"
            if app.idempotency_keys
            else None,
        ),
        AppCall(
            "the app lists the driver's gate passes",
            states.PASS_ISSUED,
            "GET",
            "/gatepass",
            200,
            {"items": match.each_like(gate_pass)},
        ),
    ]


def navigate_calls(app: AppVersion) -> list[AppCall]:
    destination = {
        "name": match.like("Chicago Cross-Dock"),
        "address": match.like("4200 S Pulaski Rd, Chicago, IL"),
        "lat": match.number(41.8155),
        "lon": match.number(-87.7245),
        **_when(app, "entry_instructions", {"entry_instructions": match.like("Gate 3")}),
        **_when(
            app,
            "dock_hours",
            {"dock_hours": {"opens": match.like("05:00"), "closes": match.like("22:00")}},
        ),
    }
    return [
        AppCall(
            "the app asks for directions to the next stop",
            states.DRIVING_TO_PICKUP,
            "GET",
            "/navigate",
            200,
            {
                "destination": destination,
                "route_km": match.number(12.5),
                "eta_minutes": match.integer(10),
                **_when(app, "on_time", {"on_time": match.boolean(True)}),
            },
            query={"load_id": states.LOAD, "lat": "41.9", "lon": "-87.6"},
        )
    ]


def message_calls(app: AppVersion) -> list[AppCall]:
    message = {
        "message_id": match.like("M-1"),
        "direction": match.regex("to_driver", regex=r"^(to_driver|to_dispatch)$"),
        "body": match.like("Dock 4 is free"),
        "sent_at": timestamp(),
        **_when(app, "message_load", {"load_id": match.like(states.LOAD)}),
    }
    sent: dict[str, Any] = {"message_id": match.like("M-2"), "sent_at": timestamp()}
    body: dict[str, Any] = {"body": "At the gate, 10 minutes out"}
    if "message_load" in app.reads:
        body["load_id"] = states.LOAD
        sent["load_id"] = match.like(states.LOAD)
    return [
        AppCall(
            "the app opens the inbox",
            states.MESSAGE_FROM_DISPATCH,
            "GET",
            "/message",
            200,
            {"items": match.each_like(message)},
            query={"limit": "20"} if "inbox_paging" in app.reads else {},
        ),
        AppCall(
            "the driver writes to dispatch",
            None,
            "POST",
            "/message",
            201,
            sent,
            body=body,
            key=f"app-{app.version.replace('.', '')}-msg-0001" if app.idempotency_keys else None,
        ),
    ]


CALLS = {
    "loads": load_calls,
    "gatepass": gatepass_calls,
    "navigate": navigate_calls,
    "message": message_calls,
}


def pact_file(app: AppVersion, provider: str, directory: Path = PACTS) -> Path:
    return directory / f"{app.consumer}-{provider}.json"


def _add(pact: Pact, app: AppVersion, call: AppCall, token: str) -> None:
    interaction = pact.upon_receiving(call.description)
    if call.state:
        interaction.given(call.state)
    interaction.with_request(call.method, call.path)
    if call.query:
        interaction.with_query_parameters(call.query)
    interaction.with_header("Authorization", match.regex(f"Bearer {token}", regex=BEARER_PATTERN))
    interaction.with_header("Relay-App-Version", app.release)
    if call.key is not None:
        interaction.with_header("Idempotency-Key", match.regex(call.key, regex=KEY_PATTERN))
    if call.body is not None:
        interaction.with_body(call.body, content_type=JSON)
    interaction.will_respond_with(call.status).with_body(call.answer, content_type=JSON)


def _replay(client: httpx.Client, app: AppVersion, call: AppCall, token: str) -> None:
    headers = {"Authorization": f"Bearer {token}", "Relay-App-Version": app.release}
    if call.key is not None:
        headers["Idempotency-Key"] = call.key
    r = client.request(call.method, call.path, params=call.query, json=call.body, headers=headers)
    assert r.status_code == call.status, f"{call.description}: {r.status_code} {r.text}"


def record(app: AppVersion, directory: Path = PACTS) -> list[Path]:
    """Writes ``app``'s pact with each module that has none yet (never an existing one): each
    call made against a Pact mock server as the app makes it. The files written."""
    issuer = DevIssuer.generate()
    token = issuer.mint(states.DRIVER, Role.DRIVER, states.DRIVER, ttl_seconds=3600)
    written = []
    for provider, calls in CALLS.items():
        target = pact_file(app, provider, directory)
        if target.exists():
            continue
        pact = Pact(app.consumer, provider).with_specification("V4")
        made = calls(app)
        for call in made:
            _add(pact, app, call, token)
        with pact.serve(addr="127.0.0.1") as server, httpx.Client(base_url=str(server.url)) as c:
            for call in made:
                _replay(c, app, call, token)
        pact.write_file(directory, overwrite=False)
        written.append(target)
    return written


def missing(versions: Iterable[AppVersion] = VERSIONS.values(), directory: Path = PACTS):
    """The (version, provider) pairs without a recorded pact."""
    return [
        (app.version, provider)
        for app in versions
        for provider in APP_PROVIDERS
        if not pact_file(app, provider, directory).exists()
    ]
