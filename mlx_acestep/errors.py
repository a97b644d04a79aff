"""User-facing errors.

Anything a user can cause (a missing folder, a wrong key, a bad shape, a file
that cannot be decoded) is raised as `AceStepError` with a one-line message
naming the file or key. The CLI prints it without a traceback.
"""

import json

# What reading outside JSON can raise besides OSError: bad bytes, bad JSON, or nesting past the parser's stack.
BAD_JSON = (UnicodeDecodeError, json.JSONDecodeError, RecursionError)


class AceStepError(Exception):
    """A problem with the user's input, files or options (not a bug)."""


class AdapterError(AceStepError):
    """An adapter that cannot be read or does not fit the model (one line: the file, and the key or value)."""


class FieldError(AceStepError):
    """A bad value of a named field (of a request, a config, a server setting). The message names the field through
    the tokens `@name@` (this field), `@task@` and `@sample@`: `str()` shows the Python field names, `render(names)` the caller's
    own (the CLI's flags). (Not `{name}`: the messages hold user data, which may contain braces.)"""

    def __init__(self, name: str, template: str):
        self.name, self.template = name, template
        super().__init__(self.render({}))

    def render(self, names: dict[str, str]) -> str:
        text = self.template
        for token, field in (("name", self.name), ("task", "task"), ("sample", "sample")):
            text = text.replace(f"@{token}@", names.get(field, field))
        return text


class RequestError(FieldError):
    """A bad field of a generation request."""


class MissingDiT(AceStepError):
    """A model without the DiT asked for: `where` (the folder), `dit` (the name asked) and `available` (what it has),
    so that a caller can say which checkpoint a task needs without reading the message."""

    def __init__(self, where, dit: str, available, what: str = "DiT"):
        self.where, self.dit, self.available = where, dit, tuple(available)
        super().__init__(f"{where}: no {what} {dit!r} (available: {', '.join(self.available)})")


def first_line(e: BaseException) -> str:
    """An exception's first line of text (its type's name if it has none): what a one-line error quotes."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
