from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from module_kit.cells import CellTables

LOADS_MODULE = "loads"  # the celled module whose table this module reads (identity.cells key)


class NavigateSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    facilities_table: str
    # Owned by the loads module; read-only here. On a celled stage one table per cell,
    # "cell-1=<table>,cell-2=<table>" (module_kit.cells); else one table name.
    loads_table: str

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
