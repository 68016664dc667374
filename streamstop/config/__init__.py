"""Configuration: the typed model (`models`) and how it is loaded (`loading`)."""

from streamstop.config.loading import load_settings, render_effective
from streamstop.config.models import ConfigError, Settings

__all__ = ["ConfigError", "Settings", "load_settings", "render_effective"]
