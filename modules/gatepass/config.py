from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from module_kit.cells import CellTables

LOADS_MODULE = "loads"  # the celled module whose table this module reads (identity.cells key)


class GatepassSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    gatepass_table: str
    # The loads module's table; this module only reads it. On a celled stage one table per
    # cell, "cell-1=<table>,cell-2=<table>" (module_kit.cells); else one table name.
    loads_table: str
    gatepass_signing_key_id: str  # the current KMS key (ECC_NIST_P256 / SIGN_VERIFY): signs
    # Comma-separated KMS key ids or ARNs of keys rotated out: they sign nothing but stay
    # published and accepted until their passes have expired (see signing.py, Key rotation).
    gatepass_retired_key_ids: str = ""
    idempotency_table: str  # Powertools idempotency records of this module's POSTs

    @field_validator("loads_table")
    @classmethod
    def _loads_table_parses(cls, value: str) -> str:
        """A malformed LOADS_TABLE stops the function at start-up, naming the setting."""
        CellTables.parse(LOADS_MODULE, value, setting="LOADS_TABLE")
        return value

    @property
    def loads_tables(self) -> CellTables:
        """The loads table per cell (or the one table), and which a request reads."""
        return CellTables.parse(LOADS_MODULE, self.loads_table, setting="LOADS_TABLE")

    @property
    def retired_key_ids(self) -> tuple[str, ...]:
        """``gatepass_retired_key_ids`` as a tuple, blanks and stray commas dropped."""
        return tuple(k for k in (p.strip() for p in self.gatepass_retired_key_ids.split(",")) if k)
