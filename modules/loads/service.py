"""Load rules: who may see a load, and the status state machine events must follow.

    assigned --arrived(1)--> at_stop(1) --departed(1)--> in_transit(2) --arrived(2)--> ...
    ... at_stop(last) --delivered(last)--> delivered   (terminal)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared_contracts.errors import ConflictError, NotFoundError, ValidationFailedError
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

from .repository import ConcurrentUpdateError, LoadExistsError, LoadsRepository

Clock = Callable[[], datetime]
MAX_CLOCK_SKEW = timedelta(minutes=5)


def utcnow() -> datetime:
    return datetime.now(UTC)


def apply_event(load: LoadPublic, event: LoadEventCreate, at: datetime) -> LoadPublic:
    """Return ``load`` after ``event``, or raise ConflictError if the transition is invalid."""
    if load.status is LoadStatus.DELIVERED:
        raise ConflictError(f"load {load.load_id} is delivered: it takes no further events",
                            code="invalid-transition")
    if event.stop_seq > len(load.stops):
        raise ValidationFailedError(f"load {load.load_id} has no stop {event.stop_seq}")
    if event.stop_seq != load.current_stop:
        raise ConflictError(
            f"{event.kind.value} at stop {event.stop_seq}, but the current stop is "
            f"{load.current_stop}", code="invalid-transition")

    stops = [s.model_copy() for s in load.stops]
    stop: Stop = stops[event.stop_seq - 1]
    is_last = event.stop_seq == len(stops)
    status, current = load.status, load.current_stop

    if event.kind is LoadEventKind.ARRIVED:
        if load.status is LoadStatus.AT_STOP:
            raise ConflictError(f"already at stop {current}: report departed first",
                                code="invalid-transition")
        stop.arrived_at, status = at, LoadStatus.AT_STOP
    elif event.kind is LoadEventKind.DEPARTED:
        if load.status is not LoadStatus.AT_STOP:
            raise ConflictError(f"not at stop {current}: report arrived first",
                                code="invalid-transition")
        if is_last:
            raise ConflictError("this is the final stop: report delivered",
                                code="invalid-transition")
        stop.departed_at, status, current = at, LoadStatus.IN_TRANSIT, current + 1
    else:  # delivered
        if load.status is not LoadStatus.AT_STOP or not is_last:
            raise ConflictError("delivered is reported at the final stop, after arriving",
                                code="invalid-transition")
        stop.departed_at, status = at, LoadStatus.DELIVERED

    return load.model_copy(update={
        "stops": stops, "status": status, "current_stop": current,
        "version": load.version + 1, "updated_at": at,
    })


class LoadsService:
    def __init__(self, repository: LoadsRepository, clock: Clock = utcnow) -> None:
        self.repository = repository
        self.clock = clock

    def list_for_driver(self, driver_id: str) -> list[LoadPublic]:
        loads = self.repository.list_for_driver(driver_id)
        return sorted(loads, key=lambda l: (l.status is LoadStatus.DELIVERED,
                                            l.stops[0].window_start))

    def get(self, driver_id: str, load_id: str) -> LoadPublic:
        load = self.repository.get(load_id)
        if load is None or load.driver_id != driver_id:
            # Same answer for "not yours" and "does not exist": ids cannot be probed.
            raise NotFoundError(f"load {load_id} not found")
        return load

    def record_event(self, driver_id: str, load_id: str, event: LoadEventCreate) -> LoadEventPublic:
        now = self.clock()
        occurred = event.occurred_at or now
        if occurred - now > MAX_CLOCK_SKEW:
            raise ValidationFailedError("occurred_at is in the future")
        load = self.get(driver_id, load_id)
        updated = apply_event(load, event, occurred)
        saved = LoadEventPublic(
            load_id=load_id, seq=load.version, kind=event.kind, stop_seq=event.stop_seq,
            occurred_at=occurred, recorded_at=now, load=updated,
        )
        try:
            self.repository.save_event(saved, expected_version=load.version)
        except ConcurrentUpdateError:
            raise ConflictError(f"load {load_id} changed while this event was applied; "
                                "fetch it and retry", code="concurrent-update") from None
        return saved

    def assign(self, command: LoadAssign) -> LoadPublic:
        now = self.clock()
        stops = [Stop(seq=i, **plan.model_dump()) for i, plan in enumerate(command.stops, 1)]
        load = LoadPublic(
            load_id=command.load_id, driver_id=command.driver_id, status=LoadStatus.ASSIGNED,
            reference=command.reference, trailer=command.trailer, commodity=command.commodity,
            shipper=stops[0].facility, consignee=stops[-1].facility, stops=stops,
            current_stop=1, version=1, assigned_at=now, updated_at=now,
        )
        try:
            self.repository.create(load)
        except LoadExistsError:
            raise ConflictError(f"load {command.load_id} is already assigned",
                                code="already-assigned") from None
        self.repository.enqueue_notification(Notification(
            notification_id=uuid.uuid4().hex, kind=NotificationKind.LOAD_ASSIGNED,
            driver_id=load.driver_id, title="New load assigned",
            body=f"Load {load.load_id}: {load.shipper.name} to {load.consignee.name}",
            data={"load_id": load.load_id},
        ))
        return load
