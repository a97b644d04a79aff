"""Dataclass configs read from a checkpoint's `config.json`."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import ClassVar

from ..errors import AceStepError


def missing_key_error(source: str, error: TypeError) -> AceStepError:
    """A dataclass constructor's "missing ... argument: 'x'" as a one-line error naming the file and the key."""
    found = re.search(r"argument[s]?: '([^']+)'", str(error))
    if found:
        return AceStepError(f"{source}: missing required key '{found.group(1)}'")
    return AceStepError(f"{source}: invalid config ({error})")


class FromDict:
    """`from_dict(d)` keeps the dataclass's own fields and ignores unknown keys (as mlx-lm's ModelArgs).

    The keys in `REQUIRED` must be present: the model reads them and no default is safe (a wrong window
    or rope base loads fine and sounds wrong). Every other field's default is documented beside it.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json"):
        for key in cls.REQUIRED:
            if key not in d:
                raise AceStepError(f"{source}: missing required key '{key}'")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
            raise missing_key_error(source, e) from None
