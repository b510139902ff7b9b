"""The one exception type a user can cause, and how the CLI reports it."""


class UserError(Exception):
    """A problem the user can fix (bad config, missing file, mismatched store).

    The CLI prints ``str(error)`` as one line and exits with status 2. The text
    says what went wrong, where, and how to fix it.
    """


class DiskFull(UserError):
    """A write failed for lack of space; the previous file is intact."""
