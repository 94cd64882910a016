"""The one exception type users see as a clean message (no traceback)."""


class ConfigError(Exception):
    """Bad input: a file, key or value. The message says what is allowed."""
