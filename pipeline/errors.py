"""The one family of errors a user can put right: a bad config value or flag, data that cannot be had, a missing or
foreign checkpoint, an unwritable folder, an absent device, a diverged run.

Every script catches UserError once, at its edge (cli.one_line_errors), and prints its message as one line with the
exit status of its kind; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Base of every error whose message tells the user what to do."""
    label = "error"    # the line's first word(s): `error: ...`
    exit_status = 1


class ConfigError(UserError):
    """A bad configuration value (--preset, --set, a script flag that sets a field)."""
    label = "config error"
    exit_status = 2


class FlagError(UserError):
    """A bad or pointless command-line flag."""


class DataError(UserError):
    """Data that cannot be had or read."""


class CheckpointError(UserError):
    """A saved file (checkpoint, token cache) that is missing, unreadable or of the wrong kind."""


class WriteError(UserError):
    """A file could not be written (full disk, read-only folder, a path through a file)."""


class DeviceError(UserError):
    """A device that was asked for by name and is not there."""


class SampleFileError(UserError):
    """A sample file for evaluate.py that cannot be read as images."""


class Diverged(UserError):
    """The loss became NaN or inf: training stops before anything of it is saved."""
