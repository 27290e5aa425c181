from pydantic_settings import BaseSettings, SettingsConfigDict


class LoadsSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    loads_table: str
    load_events_table: str
    notifications_queue_url: str
    idempotency_table: str  # Powertools idempotency records of this module's POSTs
