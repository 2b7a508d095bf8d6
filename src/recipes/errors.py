"""The error a user's configuration raises; its message names field, value, rule and fix."""


class ConfigError(ValueError):
    """A configuration that cannot run, found before any process group or GPU is touched."""
