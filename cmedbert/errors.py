"""User-facing errors.

Anything a user can cause (bad config, missing file, malformed input, mismatched artifacts)
raises :class:`CmedbertError`. The CLI prints its message as one line and exits non-zero;
tracebacks are reserved for bugs.
"""


class CmedbertError(Exception):
    """An error caused by input or configuration, reported to the user as one clear line."""


class ConfigError(CmedbertError):
    """A config file or override is wrong: unknown key, missing key, bad value."""


class ArtifactError(CmedbertError):
    """An input artifact folder is missing, incomplete, or does not match what a stage expects."""
