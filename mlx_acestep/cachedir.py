"""Where the cache lives (no heavy imports: `mlx-acestep cache` and `--help` read it without loading any model code)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MLX_ACESTEP_CACHE"
# What the converter writes at the top of every output folder: how it, the hub and `cache rm` recognise their own.
CONVERSION_FILE = "conversion.json"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$MLX_ACESTEP_CACHE`, else `~/.cache/mlx-acestep`."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mlx-acestep").expanduser()
