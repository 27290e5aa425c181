from pydantic_settings import BaseSettings, SettingsConfigDict


class GatepassSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    gatepass_table: str
    loads_table: str  # the loads module's table; this module only reads it
    gatepass_signing_key_id: str  # KMS key, ECC_NIST_P256 / SIGN_VERIFY
    idempotency_table: str  # Powertools idempotency records of this module's POSTs
