from pydantic_settings import SettingsConfigDict

from module_kit.cells import ReadsLoads


class NavigateSettings(ReadsLoads):
    """Read from the environment the template gives the function (see template.yaml).
    ``loads_table`` and the table a request reads by: :class:`ReadsLoads`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    facilities_table: str
