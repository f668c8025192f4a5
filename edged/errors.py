"""The errors edged reports to people. The CLI maps each kind to one exit status."""

from __future__ import annotations


class EdgedError(Exception):
    """An expected failure with a message meant for the person running edged."""


class ConfigError(EdgedError):
    """Invalid settings: exits 78 (EX_CONFIG) so systemd does not restart-loop on it."""


class DatasetError(EdgedError):
    """A training dataset that cannot be used as given."""


class ModelError(EdgedError):
    """A model file that is missing, truncated, corrupt or of an unknown kind."""


class CameraError(EdgedError):
    """A frame source that cannot be opened or stopped delivering."""


class BrokerError(EdgedError):
    """The MQTT broker refused us or cannot be reached."""
