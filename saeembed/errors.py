"""The one exception type that reaches users: its message is printed as a single line by the CLI."""


class SaeembedError(Exception):
    """A problem with the user's input or environment, explained in one line (exit code 2 in the CLI)."""
