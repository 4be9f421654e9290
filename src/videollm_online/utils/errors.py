"""Errors a user can fix. The command line prints their message as one line and exits non-zero, no traceback."""


class UserError(Exception):
    """A problem with the user's input or environment; the message says what is wrong and what to do."""


class ModelNotFoundError(UserError):
    """A model path or hub id that cannot be found locally."""
