"""User-facing errors: the CLI prints their message on one line, never a traceback."""


class ZooError(Exception):
    """Something the user asked for cannot be done; the message says what and what is accepted."""


class UsageError(ZooError):
    """Bad command-line input (exit status 2)."""


class PluginError(ZooError):
    """A plugin broke the contract: a name clash, a bad registration, a misspelt hook."""
