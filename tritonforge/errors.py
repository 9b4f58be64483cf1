"""The one exception type for errors a user can cause."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: printed as one line by the CLI, exit code 2.

    The message names what is wrong and how to fix it.
    """

    exit_code = 2
