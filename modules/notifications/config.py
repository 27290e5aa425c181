from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationsSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    push_topic_arn: str
