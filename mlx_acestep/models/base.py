"""Dataclass configs read from a checkpoint's `config.json`."""

from __future__ import annotations

import re
import types
import typing
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
        check_types(cls, d, source)
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as e:
            raise missing_key_error(source, e) from None


def check_types(cls, d: dict, source: str) -> None:
    """Each key of `d` that names a field of dataclass `cls` holds a value of the field's annotated type."""
    hints = typing.get_type_hints(cls)
    for key in sorted({f.name for f in fields(cls)} & d.keys()):
        if not _holds(hints[key], d[key]):
            raise AceStepError(f"{source}: '{key}' must be {_describe(hints[key])}, got {d[key]!r}")


def _holds(kind, value) -> bool:
    """Whether a JSON value fits a config field's annotation (a string where a size belongs would fail far from
    the file that caused it, or not at all)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_holds(a, value) for a in args)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(_holds(a, v) for a, v in zip(args, value))
        return not args or all(_holds(args[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    simple = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        type(None): lambda v: v is None,
    }
    return simple[kind](value) if kind in simple else True


def _describe(kind) -> str:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (list, tuple):
        return "a list"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null"}
    return names.get(kind, getattr(kind, "__name__", str(kind)))
