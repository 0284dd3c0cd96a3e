"""The one error type for user mistakes.

Anything a user can fix (a bad flag, a missing file, a corrupt shard) raises ``UserError``. The CLI prints
it as one line and exits 2; Serve turns it into a 4xx. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix. The message says what, where, and how to fix it."""


class IntegrityError(UserError):
    """Stored data does not match its manifest or checksum (corrupt, truncated or tampered)."""
