"""Load rules: who may see a load, and the status state machine events must follow.

    assigned --arrived(1)--> at_stop(1) --departed(1)--> in_transit(2) --arrived(2)--> ...
    ... at_stop(last) --delivered(last)--> delivered   (terminal)

Times of an event: ``occurred_at`` is the driver's (the body's), else when the gateway
accepted the report (``x-relay-accepted-at``, checked by :func:`accepted_time`), so an
event deferred while this module was down keeps the time it was reported, not the time it
was replayed. ``occurred_at`` may not be more than :data:`MAX_CLOCK_SKEW` after that
acceptance time: the phone's claim is judged against when it was made, so the verdict does
not depend on how long an outage delayed the delivery. ``recorded_at`` is always this
module's clock: when the event was applied.

Exactly once: a keyed event's key id (:func:`event_key_id`) is written with it and kept on
the load. A second application of the key (Powertools' lease expired while the first was
still stuck in a storage call, or the first's write landed after it gave up) answers the
recorded event instead of applying it again, or answering 409 invalid-transition.

Metrics (:mod:`module_kit.metrics`, docs/operations.md): an assignment created; the first
live read of a new load by its driver (marked once on the item, a conditional update, so
two reads racing count it once), with the seconds since it was assigned; an event accepted
on a live call (it fits the load's state) and each event applied, ``via`` live or replay
(a deferred write from the gateway's queue); a notification enqueued.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from module_kit import metrics
from module_kit.idempotency import accepted_time, derived_id
from shared_contracts.errors import (
    ConflictError,
    IdempotencyKeyReusedError,
    NotFoundError,
    ValidationFailedError,
)
from shared_contracts.loads import (
    LoadAssign,
    LoadEventCreate,
    LoadEventKind,
    LoadEventPublic,
    LoadPublic,
    LoadStatus,
    Stop,
)
from shared_contracts.notifications import Notification, NotificationKind

from .repository import ConcurrentUpdateError, LoadExistsError, LoadsRepository, StoredLoad

Clock = Callable[[], datetime]
log = logging.getLogger("relay.loads")
MAX_CLOCK_SKEW = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(UTC)


def event_key_id(driver_id: str, idempotency_key: str) -> str:
    """What a keyed event stores of its key: a digest, scoped to the reporting driver."""
    return derived_id("load-event", driver_id, idempotency_key)


def assigned_load(command: LoadAssign, at: datetime) -> LoadPublic:
    """The load ``command`` assigns, as it is first stored: its stops numbered, at the
    first one, version 1."""
    stops = [Stop(seq=i, **plan.model_dump()) for i, plan in enumerate(command.stops, 1)]
    return LoadPublic(
        load_id=command.load_id,
        driver_id=command.driver_id,
        status=LoadStatus.ASSIGNED,
        reference=command.reference,
        trailer=command.trailer,
        commodity=command.commodity,
        shipper=stops[0].facility,
        consignee=stops[-1].facility,
        stops=stops,
        current_stop=1,
        version=1,
        assigned_at=at,
        updated_at=at,
    )


def apply_event(load: LoadPublic, event: LoadEventCreate, at: datetime) -> LoadPublic:
    """Return ``load`` after ``event``, or raise ConflictError if the transition is invalid."""
    if load.status is LoadStatus.DELIVERED:
        raise ConflictError(
            f"load {load.load_id} is delivered: it takes no further events",
            code="invalid-transition",
        )
    if event.stop_seq > len(load.stops):
        raise ValidationFailedError(f"load {load.load_id} has no stop {event.stop_seq}")
    if event.stop_seq != load.current_stop:
        raise ConflictError(
            f"{event.kind.value} at stop {event.stop_seq}, but the current stop is "
            f"{load.current_stop}",
            code="invalid-transition",
        )

    stops = [s.model_copy() for s in load.stops]
    stop: Stop = stops[event.stop_seq - 1]
    is_last = event.stop_seq == len(stops)
    status: LoadStatus = load.status
    current = load.current_stop

    if event.kind is LoadEventKind.ARRIVED:
        if load.status is LoadStatus.AT_STOP:
            raise ConflictError(
                f"already at stop {current}: report departed first", code="invalid-transition"
            )
        stop.arrived_at, status = at, LoadStatus.AT_STOP
    elif event.kind is LoadEventKind.DEPARTED:
        if load.status is not LoadStatus.AT_STOP:
            raise ConflictError(
                f"not at stop {current}: report arrived first", code="invalid-transition"
            )
        if is_last:
            raise ConflictError(
                "this is the final stop: report delivered", code="invalid-transition"
            )
        stop.departed_at, status, current = at, LoadStatus.IN_TRANSIT, current + 1
    else:  # delivered
        if load.status is not LoadStatus.AT_STOP or not is_last:
            raise ConflictError(
                "delivered is reported at the final stop, after arriving", code="invalid-transition"
            )
        stop.departed_at, status = at, LoadStatus.DELIVERED

    return load.model_copy(
        update={
            "stops": stops,
            "status": status,
            "current_stop": current,
            "version": load.version + 1,
            "updated_at": at,
        }
    )


class LoadsService:
    def __init__(
        self,
        repository: LoadsRepository,
        clock: Clock = utcnow,
        *,
        metrics_writer: metrics.ModuleMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.clock = clock
        self.metrics = metrics_writer or metrics.ModuleMetrics("loads")

    def list_for_driver(self, driver_id: str) -> list[LoadPublic]:
        stored = self.repository.list_stored_for_driver(driver_id)
        self._mark_seen(stored)
        return sorted(
            (s.load for s in stored),
            key=lambda ld: (ld.status is LoadStatus.DELIVERED, ld.stops[0].window_start),
        )

    def get(self, driver_id: str, load_id: str) -> LoadPublic:
        stored = self._stored(driver_id, load_id)
        self._mark_seen([stored])
        return stored.load

    def _mark_seen(self, stored: list[StoredLoad]) -> None:
        """Count the first live read of each new load (assigned, not yet read) once.
        Only a new load costs a write; a failure to mark it never fails the read."""
        for item in stored:
            load = item.load
            if item.seen or load.status is not LoadStatus.ASSIGNED:
                continue
            now = self.clock()
            try:
                first = self.repository.mark_seen(load, now)
            except Exception:
                log.exception("could not mark load %s seen", load.load_id)
                continue
            if first:
                self.metrics.count(metrics.ASSIGNMENTS_SEEN, via=metrics.VIA_LIVE)
                delay = max((now - load.assigned_at).total_seconds(), 0.0)
                self.metrics.seconds(metrics.ASSIGNMENT_SEEN_DELAY, delay)

    def _stored(self, driver_id: str, load_id: str) -> StoredLoad:
        stored = self.repository.get_for_driver(load_id, driver_id)
        if stored is None:
            # Same answer, and the same work, for "not yours" and "does not exist": the
            # repository checks the owner before it parses the load, so ids cannot be probed.
            raise NotFoundError(f"load {load_id} not found")
        return stored

    def record_event(
        self,
        driver_id: str,
        load_id: str,
        event: LoadEventCreate,
        *,
        idempotency_key: str | None = None,
        accepted_at: datetime | None = None,
    ) -> LoadEventPublic:
        """Apply ``event``; see the module docstring for its times and for ``idempotency_key``."""
        now = self.clock()
        accepted = accepted_time(accepted_at, now, max_skew=MAX_CLOCK_SKEW)
        occurred = event.occurred_at or accepted
        if occurred - accepted > MAX_CLOCK_SKEW:
            raise ValidationFailedError("occurred_at is in the future")
        key_id = event_key_id(driver_id, idempotency_key) if idempotency_key else None
        stored = self._stored(driver_id, load_id)
        if key_id is not None and (recorded := self._recorded(stored, key_id, event)):
            return recorded
        load = stored.load
        updated = apply_event(load, event, occurred)
        via = metrics.current_via()
        if via == metrics.VIA_LIVE:
            self.metrics.count(metrics.EVENTS_ACCEPTED)
        saved = LoadEventPublic(
            load_id=load_id,
            seq=load.version,
            kind=event.kind,
            stop_seq=event.stop_seq,
            occurred_at=occurred,
            recorded_at=now,
            load=updated,
        )
        try:
            self.repository.save_event(
                saved, expected_version=load.version, key_id=key_id, event_keys=stored.event_keys
            )
        except ConcurrentUpdateError:
            # Lost a race. If the winner was this very event (a second delivery of its key),
            # answer with it; otherwise the load changed under us.
            if key_id is not None and (
                recorded := self._recorded(self._stored(driver_id, load_id), key_id, event)
            ):
                return recorded
            raise ConflictError(
                f"load {load_id} changed while this event was applied; fetch it and retry",
                code="concurrent-update",
            ) from None
        self.metrics.count(metrics.EVENTS_APPLIED, via=via)
        return saved

    def _recorded(
        self, stored: StoredLoad, key_id: str, event: LoadEventCreate
    ) -> LoadEventPublic | None:
        """The event already applied under ``key_id``, if any; refused if it is another event."""
        recorded = self.repository.recorded_event(stored, key_id)
        if recorded is None:
            return None
        if (recorded.kind, recorded.stop_seq) != (event.kind, event.stop_seq) or (
            event.occurred_at is not None and event.occurred_at != recorded.occurred_at
        ):
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different event for this load; "
                "use a new key for a new request"
            )
        return recorded

    def assign(self, command: LoadAssign) -> LoadPublic:
        load = assigned_load(command, self.clock())
        try:
            self.repository.create(load)
        except LoadExistsError:
            raise ConflictError(
                f"load {command.load_id} is already assigned", code="already-assigned"
            ) from None
        self.metrics.count(metrics.ASSIGNMENTS_CREATED)
        enqueued = self.repository.enqueue_notification(
            Notification(
                notification_id=uuid.uuid4().hex,
                kind=NotificationKind.LOAD_ASSIGNED,
                driver_id=load.driver_id,
                title="New load assigned",
                body=f"Load {load.load_id}: {load.shipper.name} to {load.consignee.name}",
                data={"load_id": load.load_id},
            )
        )
        if enqueued:
            self.metrics.count(metrics.NOTIFICATIONS_ENQUEUED)
        return load
