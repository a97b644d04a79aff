"""Declared fields: each value rule (type, range, choices) of a request, a config or a server setting, written once.

A `Field` names its value's kind, range (each end open or closed), default, unit and help; `Field.check` returns
the value coerced (120.0 is the whole number 120) or raises a `FieldError` naming the field, which the command line
shows as the flag that set it. The ranges themselves live in `limits.py`. No MLX import here: `--help` reads it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import FieldError
from .limits import SEED_MAX

KINDS = ("number", "integer", "text", "bool", "choice")


def is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _listing(items) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


@dataclass(frozen=True)
class Field:
    """One value rule. `lo`/`hi` are the range's ends (None: unbounded), `low_open`/`high_open` whether they are
    excluded; `optional`: None is allowed (and kept); `unit` follows the range in messages ("seconds"); `what`
    names a choice's kind ("unknown sampling method ..."); `note` says why the range is what it is."""

    name: str
    kind: str
    lo: float | None = None
    hi: float | None = None
    low_open: bool = False
    high_open: bool = False
    default: object = None
    optional: bool = False
    help: str = ""
    unit: str = ""
    choices: tuple = ()
    what: str = ""
    note: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")

    def check(self, value, error: type[FieldError] = FieldError):
        """`value` as the field holds it, or `error(name, message)`."""
        if value is None and self.optional:
            return None
        if self.kind == "number":
            if not is_number(value) or not math.isfinite(value):
                unit = f" of {self.unit}" if self.unit else ""
                raise error(self.name, f"@name@ must be a number{unit}, got {value!r}")
        elif self.kind == "integer":
            if is_number(value) and not is_int(value) and math.isfinite(value) and float(value).is_integer():
                value = int(value)
            if not is_int(value):
                raise error(self.name, f"@name@ must be a whole number, got {value!r}")
            value = int(value)
        elif self.kind == "text":
            if not isinstance(value, str):
                raise error(self.name, f"@name@ must be text, got {type(value).__name__}")
        elif self.kind == "bool":
            if not isinstance(value, bool):
                allowed = "True, False or None" if self.optional else "True or False"
                raise error(self.name, f"@name@ must be {allowed}, got {value!r}")
        elif value not in self.choices:
            shown = _listing(c for c in self.choices if c is not None)
            raise error(self.name, f"unknown {self.what or '@name@'} {value!r} (choose {shown})")
        if self.kind in ("number", "integer") and not self.within(value):
            unit = f" {self.unit}" if self.unit else ""
            raise error(self.name, f"@name@ must be {self.span()}{unit}, got {self._show(value)}{self.note}")
        return value

    def within(self, v) -> bool:
        lo, hi = self.lo, self.hi
        above = lo is None or (v > lo if self.low_open else v >= lo)
        below = hi is None or (v < hi if self.high_open else v <= hi)
        return above and below

    def span(self) -> str:
        """The range in words: "between 10 and 600", "in (0, 10]", "at least 1", "a positive number"."""
        lo, hi = self._show(self.lo), self._show(self.hi)
        if self.lo is not None and self.hi is not None:
            if not self.low_open and not self.high_open:
                return f"between {lo} and {hi}"
            return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        if self.lo is not None:
            if self.low_open:
                return "a positive number" if self.lo == 0 else f"more than {lo}"
            return f"at least {lo}"
        if self.hi is not None:
            return f"less than {hi}" if self.high_open else f"at most {hi}"
        return "any number"

    def _show(self, v) -> str:
        if v is None:
            return ""
        if self.kind == "integer":
            return "2**63 - 1" if v == SEED_MAX else str(v)  # the seed's bound, as the docs write it
        return f"{v:g}"


class Fields:
    """A group of fields (a request's, a config's): `fields["name"]`, `fields.check(name, value)` with the group's
    error class, and `defaults()`."""

    def __init__(self, *fields: Field, error: type[FieldError] = FieldError):
        self.by_name = {f.name: f for f in fields}
        self.error = error

    def __getitem__(self, name: str) -> Field:
        return self.by_name[name]

    def __iter__(self):
        return iter(self.by_name.values())

    def check(self, name: str, value):
        return self.by_name[name].check(value, self.error)

    def default(self, name: str):
        return self.by_name[name].default

    def check_into(self, obj, names=None) -> None:
        """Check the named (default: all) fields of a dataclass instance in place (frozen ones too)."""
        for name in names or self.by_name:
            object.__setattr__(obj, name, self.check(name, getattr(obj, name)))
