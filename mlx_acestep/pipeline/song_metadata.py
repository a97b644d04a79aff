"""A song's key and time signature as the reference's metadata writes them: one rule for the request, the planner's
text tasks and the trainer's clips."""

from __future__ import annotations

from ..errors import RequestError
from ..fields import Field, is_int
from ..names import KEYSCALES, TIME_SIGNATURES

KEY = Field("key", "text", optional=True)


def normalize_key(key: str | None) -> str | None:
    """A key as the reference writes it ("C major", "F# minor", "Bb major"): the note capitalised, the mode lower."""
    if key is None:
        return None
    parts = KEY.check(key, RequestError).split()
    if len(parts) == 2:
        candidate = f"{parts[0][:1].upper()}{parts[0][1:]} {parts[1].lower()}"
        if candidate in KEYSCALES:
            return candidate
    raise RequestError(
        "key",
        f"unknown key {key!r} for @name@ (a note A-G, optionally # or b, then major or minor: "
        "e.g. 'C major', 'F# minor')",
    )


def normalize_time_signature(value) -> str | None:
    """Beats per bar as the reference's metadata holds it: 2, 3, 4 or 6 (also given as "4/4", "6/8")."""
    if value is None:
        return None
    text = str(value).strip() if is_int(value) or isinstance(value, str) else None
    if text is not None and "/" in text and text.split("/", 1)[1] in ("4", "8"):
        text = text.split("/", 1)[0]
    if text not in TIME_SIGNATURES:
        raise RequestError(
            "time_signature",
            f"@name@ must be one of {', '.join(TIME_SIGNATURES)} beats per bar (or 2/4, 3/4, 4/4, 6/8), got {value!r}",
        )
    return text
