"""Dataclass configs read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import fields


class FromDict:
    """`from_dict(d)` keeps the dataclass's own fields and ignores unknown keys (as mlx-lm's ModelArgs)."""

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
