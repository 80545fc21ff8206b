"""The one exception type the CLI turns into a clear message and exit status 2."""


class HarnessError(Exception):
    """A user-facing error: the message names the file or value and the fix."""


class DataError(HarnessError):
    """A dataset on disk is missing, incomplete or unreadable."""


class PluginError(HarnessError):
    """A plugin name is unknown, duplicated, broken or given bad options."""
