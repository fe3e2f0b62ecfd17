"""The errors the project raises for problems a user can fix (their own module so that any module can use them)."""


class UserError(Exception):
    """A problem with the user's input, files or environment; the message says what is wrong and what to do,
    and the scripts print it without a traceback."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is wrong; the message says which and what to do."""
