"""Errors a user can act on.

Every error raised for bad input is an ``AutoscalpError`` whose message is one line naming the
problem (file, key, line number, reason). The CLI prints that line and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class AutoscalpError(Exception):
    """Bad input or configuration, reported to the user as one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ConfigError(AutoscalpError):
    """A config file that does not validate."""


class SourceError(AutoscalpError):
    """A tick source that cannot be read: missing, corrupt, truncated or of the wrong format."""


class TransientSourceError(SourceError):
    """A source that failed for a reason that may pass (network down after all retries).

    The ingest flow retries these at task level; other AutoscalpErrors are not retried.
    """
