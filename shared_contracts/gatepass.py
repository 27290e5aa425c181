"""Gate passes: signed, offline-verifiable tokens to enter a facility's yard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from ._base import Contract, DriverId, FacilityId, LoadId, PassId, Published

PassToken = Annotated[str, StringConstraints(min_length=20, max_length=4096)]


class GatePassCreate(Contract):
    load_id: LoadId
    facility_id: FacilityId


class GatePassPublic(Published):
    pass_id: PassId
    driver_id: DriverId
    load_id: LoadId
    facility_id: FacilityId
    valid_from: datetime
    valid_until: datetime
    issued_at: datetime
    kid: str
    token: str
    qr_payload: str
    revoked: bool = False


class GatePassList(Published):
    """A driver's passes, newest first."""

    items: list[GatePassPublic]


class GatePassVerify(Contract):
    token: PassToken
    facility_id: FacilityId


class GatePassVerdict(Published):
    valid: bool
    reason: str
    pass_id: PassId | None = None
    driver_id: DriverId | None = None
    load_id: LoadId | None = None
    facility_id: FacilityId | None = None
    valid_until: datetime | None = None
    revocation_checked: bool = Field(
        default=True,
        description="false when the gateway judged the pass without the gatepass module: "
        "only revocations the gateway had seen were checked",
    )


class Jwk(Published):
    kty: str
    crv: str
    x: str
    y: str
    kid: str
    alg: str
    use: str


class Jwks(Published):
    keys: list[Jwk]
