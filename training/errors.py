"""The base of every error a user can cause, so the CLI reports any of them in one line.

It lives in the lowest CPython layer, so host, emulator and training classes can all derive
from it (the firmware below runs on MicroPython and keeps its own exceptions).
"""


class XbarError(Exception):
    """An input, file or board the user can fix: ``xbar`` prints the message, exits with
    ``exit_code``."""

    exit_code = 1


class UsageError(XbarError):
    """A command line that asks for something impossible (exit 2, as argparse's errors)."""

    exit_code = 2
