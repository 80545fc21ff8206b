"""The one exception type the CLI turns into a clear message and exit status 2."""


class HarnessError(Exception):
    """A user-facing error: the message names the file or value and the fix."""


class DataError(HarnessError):
    """A dataset on disk is missing, incomplete or unreadable."""


class PluginError(HarnessError):
    """A plugin name is unknown, duplicated, broken or given bad options."""


def name_some(items: list[str], show: int = 5) -> str:
    """``"a, b, c, d, e and 7 more"``: the first few of a list, for error messages."""
    head = ", ".join(items[:show])
    return head + (f" and {len(items) - show} more" if len(items) > show else "")
