from pydantic_settings import SettingsConfigDict

from module_kit.cells import ReadsLoads


class GatepassSettings(ReadsLoads):
    """Read from the environment the template gives the function (see template.yaml).
    ``loads_table`` and the table a request reads by: :class:`ReadsLoads`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    gatepass_table: str
    gatepass_signing_key_id: str  # the current KMS key (ECC_NIST_P256 / SIGN_VERIFY): signs
    # Comma-separated KMS key ids or ARNs of keys rotated out: they sign nothing but stay
    # published and accepted until their passes have expired (see signing.py, Key rotation).
    gatepass_retired_key_ids: str = ""
    idempotency_table: str  # Powertools idempotency records of this module's POSTs

    @property
    def retired_key_ids(self) -> tuple[str, ...]:
        """``gatepass_retired_key_ids`` as a tuple, blanks and stray commas dropped."""
        return tuple(k for k in (p.strip() for p in self.gatepass_retired_key_ids.split(",")) if k)
