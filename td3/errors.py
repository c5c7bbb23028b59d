"""The project's error types.

Every error a user can cause (bad file, unknown name, impossible config, NaN loss,
missing checkpoint) is a ``TD3Error``: the command-line entry points print its message
as one line and exit with status 2, without a traceback. Anything else is a bug and keeps
its traceback.
"""


class TD3Error(Exception):
    """Base class: a problem with the user's input, reported as one clear line."""


class DataError(TD3Error):
    """A dataset cannot be obtained or read: wrong checksum, missing file, malformed row,
    unknown dataset name, too small for the config."""


class ConfigError(TD3Error):
    """A configuration that cannot work, refused before any work starts."""


class TrainingError(TD3Error):
    """Training diverged (non-finite loss or gradient) or a checkpoint is missing/corrupt."""


class DamagedFileError(TrainingError):
    """A file the project wrote cannot be read back (truncated, overwritten, not its format):
    a cache holding it can be rebuilt, where other training errors cannot."""
