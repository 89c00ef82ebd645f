"""Errors a user can fix (as opposed to bugs): stages print their message, not a traceback."""


class UserError(RuntimeError):
    """A problem the user can fix: bad input data, unreachable source, diverged training."""
