"""The error every configuration check raises (its own module so that any config module can use it)."""


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and what to do."""
