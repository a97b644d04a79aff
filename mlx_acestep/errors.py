"""User-facing errors.

Anything a user can cause (a missing folder, a wrong key, a bad shape, a file
that cannot be decoded) is raised as `AceStepError` with a one-line message
naming the file or key. The CLI prints it without a traceback.
"""


class AceStepError(Exception):
    """A problem with the user's input, files or options (not a bug)."""
