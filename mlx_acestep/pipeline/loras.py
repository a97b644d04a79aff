"""A request's adapters for one call, checked when the request is made: ((path, scale), ...)."""

from __future__ import annotations

from pathlib import Path

from ..errors import AceStepError, RequestError


def request_loras(loras) -> tuple[tuple[str, float], ...]:
    """`loras` as ((path, scale), ...): a bare path means scale 1; scales are finite and >= 0."""
    from ..adapters.stack import check_scale

    if isinstance(loras, (str, Path)) or not isinstance(loras, (list, tuple)):
        raise RequestError("loras", f"@name@ must be a list of paths or (path, scale) pairs, got {loras!r}")
    out = []
    for item in loras:
        if isinstance(item, (str, Path)):
            path, scale = item, 1.0
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            path, scale = item
        else:
            path = scale = None
        if not isinstance(path, (str, Path)):
            raise RequestError("loras", f"@name@: {item!r} is not a path or a (path, scale) pair")
        try:
            out.append((str(path), check_scale(scale, f"the scale of {path}")))
        except AceStepError as e:
            raise RequestError("loras", f"@name@: {e}") from None
    return tuple(out)
