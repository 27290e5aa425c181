"""Gate pass rules: who gets a pass for which facility and when, and how gates judge one.

A driver gets a pass for a stop of their own, undelivered load. It is valid from 2 h
before that stop's appointment window until 2 h after it, and only at that facility.
Verifying answers a verdict (valid or not, and why), never an error: a gate scanning a
bad pass is normal business, not a failed request.

Metrics (:mod:`module_kit.metrics`, docs/operations.md): a pass issued (once per pass: a
retried issue answering the stored pass is not counted again) and a pass verified valid at
a gate through this module (``via="live"``; the gateway counts the passes it verifies
offline while this module is down).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from module_kit import metrics
from module_kit.cells import driver_identity
from module_kit.idempotency import derived_id
from shared_contracts.errors import (
    ConflictError,
    IdempotencyKeyReusedError,
    NotFoundError,
    UnavailableError,
    ValidationFailedError,
)
from shared_contracts.gatepass import (
    GatePassCreate,
    GatePassPublic,
    GatePassVerdict,
    GatePassVerify,
    Jwks,
)
from shared_contracts.identity import IdentityContext
from shared_contracts.loads import LoadView, StopView

from .repository import GatepassRepository
from .signing import KmsSigner, PassClaims, PassRejected, Reason, SigningUnavailableError, verify

Clock = Callable[[], datetime]
log = logging.getLogger("relay.gatepass")
WINDOW_MARGIN = timedelta(hours=2)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def pass_stop(load: LoadView, facility_id: str, now: datetime) -> StopView:
    """The stop of ``load`` at ``facility_id`` a pass issued ``now`` is for.

    A route may visit a facility twice; the pass is for the first visit still open.
    """
    stops = [s for s in load.stops if s.facility.facility_id == facility_id]
    if not stops:
        on_route = ", ".join(s.facility.facility_id for s in load.stops)
        raise ValidationFailedError(
            f"facility {facility_id} is not a stop of load {load.load_id} (its stops: {on_route})",
            code="facility-not-on-load",
        )
    for stop in stops:
        if stop.window_end + WINDOW_MARGIN > now:
            return stop
    last = stops[-1]
    raise ConflictError(
        f"the appointment window at {facility_id} ended at {last.window_end.isoformat()}; "
        "passes are issued up to 2 h after it",
        code="window-passed",
    )


class GatepassService:
    def __init__(
        self,
        repository: GatepassRepository,
        signer: KmsSigner,
        clock: Clock = utcnow,
        *,
        metrics_writer: metrics.ModuleMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.signer = signer
        self.clock = clock
        self.metrics = metrics_writer or metrics.ModuleMetrics("gatepass")
        self._keys_published = False

    # --- drivers -----------------------------------------------------------------------

    def issue(
        self,
        driver: IdentityContext | str,
        command: GatePassCreate,
        *,
        idempotency_key: str | None = None,
    ) -> GatePassPublic:
        """A pass for ``command``, for the driver ``driver`` (their identity: the load is
        read in their cell; a bare driver id is a driver of an uncelled stage). With
        ``idempotency_key`` the pass id derives from it, so a second application of the key
        (the first delivery outlived its idempotency lease, or its write landed after it
        gave up) answers the pass already stored."""
        identity = driver_identity(driver)
        driver_id = identity.driver
        now = self.clock()
        load = self.repository.get_load(command.load_id, identity)
        if load is None:
            # Same answer, and the same work, for "not yours" and "does not exist" (the
            # repository checks the owner before parsing the load): ids cannot be probed.
            raise NotFoundError(f"load {command.load_id} not found")
        if load.delivered:
            raise ConflictError(
                f"load {load.load_id} is delivered: it needs no gate pass", code="load-delivered"
            )
        stop = pass_stop(load, command.facility_id, now)
        pass_id = "GP-" + (
            derived_id("gatepass", driver_id, idempotency_key)
            if idempotency_key is not None
            else uuid.uuid4().hex
        )
        claims = PassClaims(
            sub=driver_id,
            jti=pass_id,
            load_id=load.load_id,
            facility_id=command.facility_id,
            iat=_epoch(now),
            nbf=_epoch(stop.window_start - WINDOW_MARGIN),
            exp=_epoch(stop.window_end + WINDOW_MARGIN),
        )
        try:
            token = self.signer.sign(claims)
        except SigningUnavailableError:
            raise UnavailableError("cannot sign gate passes right now; retry shortly") from None
        gate_pass = GatePassPublic(
            pass_id=claims.jti,
            driver_id=driver_id,
            load_id=load.load_id,
            facility_id=command.facility_id,
            valid_from=_at(claims.nbf),
            valid_until=_at(claims.exp),
            issued_at=_at(claims.iat),
            kid=self.signer.kid,
            token=token,
            qr_payload=token,
        )
        stored = self.repository.create(gate_pass)
        if not self._keys_published:  # the keys that verify this pass, in the store too
            try:
                self._publish_keys(self.signer.jwks())
            except SigningUnavailableError:
                log.warning("gate pass keys not published yet: the signing key is unreadable")
        if (stored.driver_id, stored.load_id, stored.facility_id) != (
            driver_id,
            command.load_id,
            command.facility_id,
        ):
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used for another gate pass; "
                "use a new key for a new request"
            )
        if stored is gate_pass:  # this call stored it
            self.metrics.count(metrics.PASSES_ISSUED)
        return stored

    def get(self, driver_id: str, pass_id: str) -> GatePassPublic:
        gate_pass = self.repository.get_for_driver(pass_id, driver_id)
        if gate_pass is None:  # not theirs, or no such pass: same answer, same work
            raise NotFoundError(f"gate pass {pass_id} not found")
        return gate_pass

    def list_for_driver(self, driver_id: str) -> list[GatePassPublic]:
        passes = self.repository.list_for_driver(driver_id)
        return sorted(passes, key=lambda p: (p.issued_at, p.pass_id), reverse=True)

    # --- gates, dispatch, ops ----------------------------------------------------------

    def jwks(self) -> Jwks:
        try:
            jwks = self.signer.jwks()
        except SigningUnavailableError:
            raise UnavailableError("the signing key cannot be read right now") from None
        self._publish_keys(jwks)
        return jwks

    def _publish_keys(self, jwks: Jwks) -> None:
        """Once per process: the keys into the table, whose stream keeps the gateway's
        fallback store current (a rotation is a deployment: its new processes publish the
        new set). Never fails the answer: the next process publishes them again."""
        if self._keys_published:
            return
        try:
            self.repository.publish_keys(jwks, int(self.clock().timestamp() * 1000))
            self._keys_published = True
        except Exception:
            log.exception("could not publish the gate pass keys")

    def verify(self, command: GatePassVerify) -> GatePassVerdict:
        """Judge a scanned pass at ``command.facility_id``, as a gate would, plus revocation."""
        try:
            claims = verify(command.token, self.jwks(), self.clock())
        except PassRejected as rejected:
            return self._verdict(rejected.reason, rejected.claims)
        if claims.facility_id != command.facility_id:
            return self._verdict(Reason.WRONG_FACILITY, claims)
        stored = self.repository.get(claims.jti)
        if stored is None:
            return self._verdict(Reason.UNKNOWN_PASS, claims)
        if stored.revoked:
            return self._verdict(Reason.REVOKED, claims)
        self.metrics.count(metrics.PASSES_VERIFIED, via=metrics.VIA_LIVE)
        return self._verdict(Reason.VALID, claims)

    def revoke(self, pass_id: str) -> GatePassPublic:
        gate_pass = self.repository.get(pass_id)
        if gate_pass is None or not self.repository.mark_revoked(gate_pass):
            raise NotFoundError(f"gate pass {pass_id} not found")
        return gate_pass.model_copy(update={"revoked": True})

    @staticmethod
    def _verdict(reason: Reason, claims: PassClaims | None) -> GatePassVerdict:
        """Pass details are echoed only once the signature is known good."""
        if claims is None:
            return GatePassVerdict(valid=False, reason=reason.value)
        return GatePassVerdict(
            valid=reason is Reason.VALID,
            reason=reason.value,
            pass_id=claims.jti,
            driver_id=claims.sub,
            load_id=claims.load_id,
            facility_id=claims.facility_id,
            valid_until=_at(claims.exp),
        )
