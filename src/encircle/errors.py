"""The exceptions encircle raises for bad input.

Every input check raises a subclass of :class:`EncircleError` whose message names the
argument, what was expected and what was got. The CLI prints such errors as one line
and exits non-zero; anything else is a bug and keeps its traceback.

:class:`DataError` and :class:`ConfigError` are also :class:`ValueError` s, so code
written for scikit-learn (which raises ``ValueError`` for bad input and parameters)
catches them as it would its own.
"""


class EncircleError(Exception):
    """Base class of every error encircle raises on purpose."""


class DataError(EncircleError, ValueError):
    """A dataset, file or array is missing, malformed or inconsistent."""


class ConfigError(EncircleError, ValueError):
    """A configuration key, value or protocol name is unknown or of the wrong type."""


class CheckpointError(EncircleError):
    """A checkpoint or saved detector cannot be loaded safely or does not fit."""


class TrainingError(EncircleError):
    """Training cannot go on (for example a NaN or infinite loss)."""


class DownloadError(DataError):
    """A download failed or its checksum did not match."""
