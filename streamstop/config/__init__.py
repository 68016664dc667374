"""Configuration: the typed model (`models`) and how it is loaded (`loading`)."""

from streamstop.config.errors import ConfigError
from streamstop.config.loading import (
    Loaded,
    find_config_file,
    load,
    load_settings,
    render_effective,
    render_origins,
)
from streamstop.config.models import Settings

__all__ = [
    "ConfigError",
    "Loaded",
    "Settings",
    "find_config_file",
    "load",
    "load_settings",
    "render_effective",
    "render_origins",
]
