from pydantic_settings import BaseSettings, SettingsConfigDict


class NavigateSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    facilities_table: str
    loads_table: str  # owned by the loads module; read-only here
