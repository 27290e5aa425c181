"""Fallbacks per function, named in the route table: what a driver gets when a module fails.

Each fallback sees live answers (``remember``) and, when the module cannot answer, may
serve one (``serve``); ``None`` means it has nothing, and the gateway answers 503.

- ``last-known-good``: a bounded LRU of live GET answers per caller, served with its age.
  Loads also files each load of a list under its detail path; gate passes are served only
  while still valid.
- ``static``: navigation from what the gateway already knows (the cached load's next stop,
  straight-line distance, entry instructions seen in earlier answers).
- ``deferred``: a write accepted (202) into a durable FIFO queue, replayed in order per
  driver with its idempotency key (see :mod:`gateway.deferred.queue`).

Two layers: this process's copies first (the fastest), then the fallback store
(:mod:`gateway.fallbackstore`), a table every gateway instance reads, kept current from the
modules' own table streams: a driver whose request lands on an instance that never served
them still gets their loads and passes, the gate keys and revocations. An answer from the
store carries the marker with the age of the stored copy (since it was projected). A store
that does not answer within its deadline is no answer (503).

Copies are kept as the bytes the module sent (gate pass answers are also indexed per pass
and checked for revocations, navigate answers for entry instructions, as plain JSON). They
are read with the contracts (``LoadListView``, ``LoadView``, ``GatePassList``,
``GatePassPublic``, ``Jwks``: tolerant readers, which require only what a fallback uses and
keep unknown fields) only when served, on the failure path; a copy that does not fit raises
:class:`CopyDoesNotFitError`, which the gateway logs, counts (``fallback_errors``) and
answers with 503. Static directions are built as the navigate contract (``Directions``),
offline verdicts as ``GatePassVerdict``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from gateway.fallbackstore.store import FallbackStore, StoredCopy, StoreUnavailable
from shared_contracts.degraded import HEADER as DEGRADED_HEADER
from shared_contracts.degraded import DegradedMarker, FallbackKind
from shared_contracts.gatepass import GatePassList, GatePassPublic, GatePassVerdict, Jwks
from shared_contracts.identity import IdentityContext
from shared_contracts.loads import LoadListView, LoadView
from shared_contracts.navigate import Destination, Directions

WallClock = Callable[[], float]
log = logging.getLogger("relay.gateway.fallbacks")


def _json(body: bytes) -> object:
    """A live answer's JSON, or None: remembering never fails the answer it remembers."""
    try:
        return json.loads(body)
    except ValueError:  # not JSON (or not UTF-8): nothing to learn from it
        return None


DEFAULT_CACHE_ENTRIES = 20_000
TRUCK_SPEED_KMH = 75.0
ROAD_FACTOR = 1.3
STATIC_ENGINE = "gateway-static"

M = TypeVar("M", bound=BaseModel)


class CopyDoesNotFitError(ValueError):
    """A cached copy that does not fit its contract: never served, the driver gets 503."""


def parse_copy(model: type[M], body: bytes | str, what: str) -> M:
    """``body`` read as ``model``, on the failure path only; a short reason if it does not fit."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise CopyDoesNotFitError(
            f"cached {what} does not fit {model.__name__} "
            f"({exc.error_count()} problem(s); {where}: {first['msg']})"
        ) from None


def _check_copy(model: type[BaseModel], body: bytes, what: str) -> None:
    """Raises :class:`CopyDoesNotFitError` if ``body`` does not fit ``model``."""
    parse_copy(model, body, what)


def stored_age(now: float, copies: list[StoredCopy]) -> int:
    """The age of an answer made of ``copies``: that of its oldest part."""
    return max(int(now - min(c.projected_at for c in copies)), 0)


def load_order(load: LoadView) -> tuple[bool, datetime]:
    """The loads module's list order: undelivered first, by first appointment."""
    return (load.delivered, load.stops[0].window_start)


class CachedLoad(NamedTuple):
    load: LoadView
    body: bytes  # as served: the module's own bytes, or the load re-serialised from a list
    content_type: str
    stored_at: float


@dataclass
class Call:
    """What a fallback knows about the request it may answer."""

    module: str
    method: str
    path: str
    query: str
    body: bytes
    identity: IdentityContext | None
    idempotency_key: str | None = None
    request_id: str = ""
    forwarded_headers: dict[str, str] = field(default_factory=dict)
    accepted_at: float = 0.0  # wall-clock time the gateway received the request
    # The upstream the request went to: the module, or its cell ("loads/cell-1").
    unit: str = ""

    def __post_init__(self) -> None:
        self.unit = self.unit or self.module

    @property
    def caller(self) -> str:
        return self.identity.sub if self.identity else "-"


class Fallback(Protocol):
    kind: FallbackKind

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None: ...

    async def serve(self, call: Call) -> Response | None: ...


def degraded_response(
    body: bytes | str, status: int, marker: DegradedMarker, content_type: str = "application/json"
) -> Response:
    headers = {DEGRADED_HEADER: marker.header_value()}
    if marker.age is not None:
        headers["Age"] = str(marker.age)
    return Response(body, status_code=status, headers=headers, media_type=content_type)


class LastKnownGood:
    kind = FallbackKind.LAST_KNOWN_GOOD

    def __init__(
        self, max_entries: int = DEFAULT_CACHE_ENTRIES, *, clock: WallClock = time.time
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[bytes, str, float]] = OrderedDict()

    def _key(self, call: Call, path: str | None = None) -> tuple[str, str]:
        target = path or call.path
        return (call.caller, f"{target}?{call.query}" if call.query and path is None else target)

    def put(self, key: tuple[str, str], body: bytes, content_type: str) -> None:
        self._entries[key] = (body, content_type, self.clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, key: tuple[str, str]) -> tuple[bytes, str, float] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        if call.method == "GET" and status == 200:
            self.put(self._key(call), body, content_type)

    def usable(self, call: Call, body: bytes) -> bytes | None:
        """Hook: the copy as it may be served now, or None if it must not be."""
        return body

    async def serve(self, call: Call) -> Response | None:
        if call.method != "GET" or (entry := self.get(self._key(call))) is None:
            return None
        stored, content_type, stored_at = entry
        if (body := self.usable(call, stored)) is None:
            return None
        age = max(int(self.clock() - stored_at), 0)
        return degraded_response(
            body, 200, DegradedMarker(module=call.module, fallback=self.kind, age=age), content_type
        )


class LoadsLastKnownGood(LastKnownGood):
    """A load's detail is also served from the caller's list, when that copy is newer, so a
    load opened for the first time during an outage still shows. Copies are read as
    ``LoadListView`` / ``LoadView`` only then, on the failure path, never on the live one.
    Without a copy here, the driver's loads come from the fallback store (``store``)."""

    def __init__(
        self,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        *,
        clock: WallClock = time.time,
        store: FallbackStore | None = None,
    ) -> None:
        super().__init__(max_entries, clock=clock)
        self.store = store
        # Copies found to fit their contract (a copy that does not fit raises, so it is
        # never remembered as fitting).
        self._check = functools.lru_cache(maxsize=max_entries)(_check_copy)

    async def stored_load(self, caller: str, load_id: str) -> CachedLoad | None:
        """``load_id`` of ``caller`` from the fallback store (the second layer)."""
        if self.store is None or (copy := await self.store.load(caller, load_id)) is None:
            return None
        load = parse_copy(LoadView, copy.doc, f"stored load {load_id}")
        return CachedLoad(load, copy.doc.encode(), "application/json", copy.projected_at)

    async def any_load(self, caller: str, load_id: str) -> CachedLoad | None:
        """This process's copy, else the store's."""
        return self.load(caller, load_id) or await self.stored_load(caller, load_id)

    async def _from_store(self, call: Call) -> Response | None:
        if self.store is None or call.method != "GET" or call.query:
            return None
        parts = call.path.split("/")
        if call.path == "/loads":
            copies = await self.store.loads(call.caller)
            if not copies:  # never projected (or no loads): nothing to tell them apart
                return None
            loads = [parse_copy(LoadView, c.doc, "stored load") for c in copies]
            body = LoadListView(items=sorted(loads, key=load_order)).model_dump_json().encode()
            age = stored_age(self.clock(), copies)
        elif len(parts) == 3 and parts[1] == "loads":
            cached = await self.stored_load(call.caller, parts[2])
            if cached is None:
                return None
            body, age = cached.body, max(int(self.clock() - cached.stored_at), 0)
        else:
            return None
        return degraded_response(
            body, 200, DegradedMarker(module=call.module, fallback=self.kind, age=age)
        )

    def load(self, caller: str, load_id: str) -> CachedLoad | None:
        detail = self.get((caller, f"/loads/{load_id}"))
        listing = self.get((caller, "/loads"))
        if listing is not None and (detail is None or listing[2] > detail[2]):
            for item in parse_copy(LoadListView, listing[0], "/loads").items:
                if item.load_id == load_id:
                    return CachedLoad(item, item.model_dump_json().encode(), *listing[1:])
        if detail is None:
            return None
        return CachedLoad(parse_copy(LoadView, detail[0], f"/loads/{load_id}"), *detail)

    def usable(self, call: Call, body: bytes) -> bytes | None:
        """The copy if it fits its contract: checked the first time it is served, not on
        each of the many times an outage serves the same bytes (``body`` is kept by
        reference in the copies, so its hash is computed once)."""
        if call.path == "/loads":
            model: type[BaseModel] = LoadListView
        elif call.path.count("/") == 2:  # a detail asked with a query string
            model = LoadView
        else:
            return body
        self._check(model, body, call.path)
        return body

    async def serve(self, call: Call) -> Response | None:
        answer = await self._from_memory(call)
        return answer if answer is not None else await self._from_store(call)

    async def _from_memory(self, call: Call) -> Response | None:
        parts = call.path.split("/")
        if call.method == "GET" and len(parts) == 3 and parts[1] == "loads" and not call.query:
            cached = self.load(call.caller, parts[2])
            if cached is None:
                return None
            return degraded_response(
                cached.body,
                200,
                DegradedMarker(
                    module=call.module,
                    fallback=self.kind,
                    age=max(int(self.clock() - cached.stored_at), 0),
                ),
                cached.content_type,
            )
        return await super().serve(call)


class RevokedPasses:
    """Gate passes this gateway has seen revoked in live answers, kept until they expire
    (an expired pass is refused anyway). Bounded: past ``max_entries`` the expired ones go
    first, then the oldest. Only what this process saw: the revocations of the whole fleet
    are in the fallback store, which :class:`OfflinePassVerifier` also checks."""

    def __init__(
        self, max_entries: int = DEFAULT_CACHE_ENTRIES, *, clock: WallClock = time.time
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()  # pass id -> valid until

    def add(self, pass_id: object, valid_until: object = None) -> None:
        if not isinstance(pass_id, str):
            return
        try:
            until = datetime.fromisoformat(str(valid_until)).timestamp()
        except ValueError:
            until = math.inf  # not known: kept until the bound pushes it out
        self._until[pass_id] = until
        self._until.move_to_end(pass_id)
        if len(self._until) > self.max_entries:
            now = self.clock()
            for expired in [p for p, t in self._until.items() if t <= now]:
                del self._until[expired]
            while len(self._until) > self.max_entries:
                self._until.popitem(last=False)

    def __contains__(self, pass_id: object) -> bool:
        return pass_id in self._until

    def __len__(self) -> int:
        return len(self._until)


class GatePassLastKnownGood(LastKnownGood):
    """Passes are served from the copy only while valid and not known revoked; a POST may
    get an existing pass. Passes seen revoked (a revoke, a pass served revoked) are told to
    the shared :class:`RevokedPasses`. Without a copy here, the driver's passes come from
    the fallback store (``store``), under the same rules."""

    def __init__(
        self,
        max_entries: int = DEFAULT_CACHE_ENTRIES,
        *,
        clock: WallClock = time.time,
        revoked: RevokedPasses | None = None,
        store: FallbackStore | None = None,
    ) -> None:
        super().__init__(max_entries, clock=clock)
        self.revoked = revoked if revoked is not None else RevokedPasses(max_entries, clock=clock)
        self.store = store

    async def _from_store(self, call: Call) -> Response | None:
        if self.store is None or call.query:
            return None
        parts = call.path.split("/")
        if call.method == "POST" and call.path == "/gatepass":
            try:
                wanted = json.loads(call.body)
                load_id, facility_id = wanted["load_id"], wanted["facility_id"]
            except (ValueError, KeyError, TypeError):
                return None
            copies = await self.store.passes(call.caller)
            for c in copies:
                p = parse_copy(GatePassPublic, c.doc, "stored pass")
                if (p.load_id, p.facility_id) == (load_id, facility_id) and self._valid(p):
                    return self._stored_answer(call, p.model_dump_json(), [c])
            return None
        if call.method != "GET":
            return None
        if call.path == "/gatepass":
            copies = await self.store.passes(call.caller)
            if not copies:
                return None
            passes = [parse_copy(GatePassPublic, c.doc, "stored pass") for c in copies]
            valid = sorted(
                (p for p in passes if self._valid(p)),
                key=lambda p: (p.issued_at, p.pass_id),
                reverse=True,
            )
            return self._stored_answer(call, GatePassList(items=valid).model_dump_json(), copies)
        if len(parts) == 3 and parts[1] == "gatepass":
            found = await self.store.gate_pass(call.caller, parts[2])
            if found is None:
                return None
            if not self._valid(parse_copy(GatePassPublic, found.doc, "stored pass")):
                return None
            return self._stored_answer(call, found.doc, [found])
        return None

    def _stored_answer(self, call: Call, body: str, copies: list[StoredCopy]) -> Response:
        marker = DegradedMarker(
            module=call.module, fallback=self.kind, age=stored_age(self.clock(), copies)
        )
        return degraded_response(body, 200, marker)

    def _valid(self, gate_pass: GatePassPublic) -> bool:
        return (
            not gate_pass.revoked
            and gate_pass.pass_id not in self.revoked
            and gate_pass.valid_until.timestamp() > self.clock()
        )

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        super().remember(call, status, body, content_type)
        docs: object = []
        if status in (200, 201) and call.path.startswith("/gatepass"):
            doc = _json(body)
            docs = doc.get("items", [doc]) if isinstance(doc, dict) else []
        for d in docs if isinstance(docs, list) else []:
            if not isinstance(d, dict):
                continue
            if d.get("revoked") is True:
                self.revoked.add(d.get("pass_id"), d.get("valid_until"))
            if isinstance(d.get("pass_id"), str) and "load_id" in d and "facility_id" in d:
                raw = json.dumps(d).encode()
                self.put((call.caller, f"/gatepass/{d['pass_id']}"), raw, content_type)
                self.put(
                    (call.caller, f"issue:{d['load_id']}:{d['facility_id']}"), raw, content_type
                )

    def usable(self, call: Call, body: bytes) -> bytes | None:
        if call.path == "/gatepass":
            passes = parse_copy(GatePassList, body, call.path)
            return (
                GatePassList(items=[p for p in passes.items if self._valid(p)])
                .model_dump_json()
                .encode()
            )
        return body if self._valid(parse_copy(GatePassPublic, body, call.path)) else None

    async def serve(self, call: Call) -> Response | None:
        if call.method == "POST" and call.path == "/gatepass":
            try:
                wanted = json.loads(call.body)
                key = (call.caller, f"issue:{wanted['load_id']}:{wanted['facility_id']}")
            except (ValueError, KeyError, TypeError):
                return None
            entry = self.get(key)
            if entry is None or not self._valid(
                parse_copy(GatePassPublic, entry[0], f"pass for {key[1]}")
            ):
                return await self._from_store(call)
            return degraded_response(
                entry[0],
                200,
                DegradedMarker(
                    module=call.module, fallback=self.kind, age=int(self.clock() - entry[2])
                ),
                entry[1],
            )
        answer = await super().serve(call)
        return answer if answer is not None else await self._from_store(call)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


class StaticDirections:
    """Directions from the cached load's next stop (this process's copy, else the fallback
    store's); entry instructions from earlier answers, else from the store's facility."""

    kind = FallbackKind.STATIC

    def __init__(
        self,
        loads: LoadsLastKnownGood,
        *,
        clock: WallClock = time.time,
        max_facilities: int = 10_000,
    ) -> None:
        self.loads = loads
        self.clock = clock
        self.max_facilities = max_facilities
        self._destinations: OrderedDict[str, dict] = OrderedDict()

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        if status == 200 and call.method == "GET":
            doc = _json(body)
            dest = doc.get("destination") if isinstance(doc, dict) else None
            if isinstance(dest, dict) and isinstance(dest.get("facility_id"), str):
                self._destinations[dest["facility_id"]] = dest
                self._destinations.move_to_end(dest["facility_id"])
                while len(self._destinations) > self.max_facilities:
                    self._destinations.popitem(last=False)

    async def _stored_destination(self, facility_id: str) -> dict:
        store = self.loads.store
        stored = await store.facility(facility_id) if store is not None else None
        doc = _json(stored.doc.encode()) if stored is not None else None
        return doc if isinstance(doc, dict) else {}

    async def serve(self, call: Call) -> Response | None:
        q = {k: v[0] for k, v in parse_qs(call.query).items()}
        try:
            load_id, lat, lon = q["load_id"], float(q["lat"]), float(q["lon"])
        except (KeyError, ValueError):
            return None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        cached = await self.loads.any_load(call.caller, load_id)
        if cached is None or cached.load.delivered:
            return None
        load = cached.load
        stop = next((s for s in load.stops if s.seq == load.current_stop), None)
        if stop is None:
            return None
        facility = stop.facility
        known = self._destinations.get(facility.facility_id)
        if known is None:
            known = await self._stored_destination(facility.facility_id)
        straight = haversine_km(lat, lon, facility.lat, facility.lon)
        minutes = math.ceil(straight * ROAD_FACTOR / TRUCK_SPEED_KMH * 60)
        eta = datetime.fromtimestamp(self.clock(), UTC) + timedelta(minutes=minutes)
        try:
            answer = Directions(
                load_id=load_id,
                stop_seq=stop.seq,
                destination=Destination(
                    **facility.model_dump(),
                    entry_instructions=known.get("entry_instructions"),
                    dock_hours=known.get("dock_hours"),
                ),
                straight_line_km=round(straight, 1),
                route_km=round(straight * ROAD_FACTOR, 1),
                eta_minutes=minutes,
                eta=eta,
                window_start=stop.window_start,
                window_end=stop.window_end,
                on_time=eta <= stop.window_end,
                engine=STATIC_ENGINE,
            )
        except ValidationError as exc:  # e.g. dock hours of an unexpected shape
            raise CopyDoesNotFitError(
                f"static directions for {load_id} do not fit Directions: {exc.errors()[0]['msg']}"
            ) from None
        return degraded_response(
            answer.model_dump_json(), 200, DegradedMarker(module=call.module, fallback=self.kind)
        )


class OfflinePassVerifier:
    """Gate pass verification without the module: signature, window and facility checked
    with the public keys seen in an earlier live ``GET /gatepass/keys``, and revocation
    against the passes this gateway has seen revoked (:class:`RevokedPasses`: revokes and
    passes served revoked, and live verdicts ``revoked``). The module's own revocation list
    cannot be read, so every offline verdict says ``revocation_checked: false`` (and the
    degraded marker says it is not live). Also serves those keys.

    With the fallback store (``store``), keys this process never saw come from the store,
    and every pass is also checked against the store's revocations (every revocation the
    projector has seen, whichever instance served it); a store that does not answer in time
    leaves the verdict to this process's own list, as without one."""

    kind = FallbackKind.STATIC

    def __init__(
        self,
        *,
        clock: WallClock = time.time,
        revoked: RevokedPasses | None = None,
        store: FallbackStore | None = None,
    ) -> None:
        self.clock = clock
        self.revoked = revoked if revoked is not None else RevokedPasses(clock=clock)
        self.store = store
        self._jwks: bytes | None = None
        self._jwks_at = 0.0

    async def _keys(self) -> tuple[bytes, float] | None:
        """The keys and when they were known current: this process's, else the store's."""
        if self._jwks is not None:
            return self._jwks, self._jwks_at
        if self.store is not None and (stored := await self.store.jwks()) is not None:
            return stored.doc.encode(), stored.projected_at
        return None

    async def _revoked_in_store(self, pass_id: object) -> bool:
        if self.store is None or not isinstance(pass_id, str):
            return False
        try:
            return await self.store.is_revoked(pass_id)
        except StoreUnavailable as exc:
            log.warning("offline verdict without the store's revocations: %s", exc)
            return False

    def remember(self, call: Call, status: int, body: bytes, content_type: str) -> None:
        if status != 200:
            return
        if call.method == "GET" and call.path == "/gatepass/keys":
            self._jwks, self._jwks_at = body, self.clock()
        elif call.method == "POST" and call.path == "/gatepass/verify" and b"revoked" in body:
            verdict = _json(body)
            if isinstance(verdict, dict) and verdict.get("reason") == "revoked":
                self.revoked.add(verdict.get("pass_id"), verdict.get("valid_until"))

    def _verdict(self, keys: dict[str, dict], token: str, facility_id: str) -> dict:
        import jwt  # PyJWT: the same verification a gate does offline

        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid not in keys:
                return {"valid": False, "reason": "unknown_key"}
            claims = jwt.decode(
                token,
                jwt.PyJWK(keys[kid]).key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return {"valid": False, "reason": "bad_signature"}
        now = self.clock()
        found = {
            "pass_id": claims.get("jti"),
            "driver_id": claims.get("sub"),
            "load_id": claims.get("load_id"),
            "facility_id": claims.get("facility_id"),
            "valid_until": datetime.fromtimestamp(claims["exp"], UTC).isoformat(),
        }
        if now < claims.get("nbf", 0):
            return {"valid": False, "reason": "not_yet_valid", **found}
        if now >= claims["exp"]:
            return {"valid": False, "reason": "expired", **found}
        if claims.get("facility_id") != facility_id:
            return {"valid": False, "reason": "wrong_facility", **found}
        if claims.get("jti") in self.revoked:
            return {"valid": False, "reason": "revoked", **found}
        return {"valid": True, "reason": "valid", **found}

    async def serve(self, call: Call) -> Response | None:
        found = await self._keys()
        if found is None:
            return None
        raw, known_at = found
        jwks = parse_copy(Jwks, raw, "/gatepass/keys")
        if call.method == "GET" and call.path == "/gatepass/keys":
            return degraded_response(
                raw,
                200,
                DegradedMarker(
                    module=call.module,
                    fallback=FallbackKind.LAST_KNOWN_GOOD,
                    age=max(int(self.clock() - known_at), 0),
                ),
            )
        try:
            wanted = json.loads(call.body)
            keys = {k.kid: k.model_dump() for k in jwks.keys}
            verdict = self._verdict(keys, str(wanted["token"]), str(wanted["facility_id"]))
        except (ValueError, KeyError, TypeError):
            return None
        if verdict["valid"] and await self._revoked_in_store(verdict.get("pass_id")):
            verdict = {**verdict, "valid": False, "reason": "revoked"}
        answer = GatePassVerdict.model_validate({**verdict, "revocation_checked": False})
        return degraded_response(
            answer.model_dump_json(), 200, DegradedMarker(module=call.module, fallback=self.kind)
        )
