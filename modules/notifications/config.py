from pydantic_settings import BaseSettings, SettingsConfigDict


class NotificationsSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    push_topic_arn: str


class RunnerSettings(BaseSettings):
    """The queue the local runner polls: what Lambda's event source mapping knows in AWS."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    notifications_queue_url: str
    notifications_queue_arn: str
