from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MAX_RECEIVE_COUNT = 5


class NotificationsSettings(BaseSettings):
    """Read from the environment the template gives the function (see template.yaml)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    push_topic_arn: str
    # The stage's routing-control table, where operators pull the pause:notifications lever
    # (modules/notifications/pause.py); unset: never paused.
    relay_routing_table: str | None = None
    notifications_queue_url: str | None = None  # where a paused batch is put back
    # The queue's redrive maxReceiveCount (the template's MaxReceiveCount): a record failing
    # on this receive goes to the dead-letter queue next, and is counted dead-lettered.
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
