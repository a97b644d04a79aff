"""The `mlx-acestep` command line: one sub-command per verb, each in its own module.

Importing this module (what `--help` and `--version` do) imports neither
mlx-lm nor transformers (~0.25 s instead of ~4 s): each verb imports what it needs when it runs.
"""

from __future__ import annotations

import click

from .. import __version__
from .bench import bench
from .cache import cache
from .convert import convert, reconstruct
from .generate import generate
from .serve import serve
from .songwriter import describe
from .train import train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-acestep")
def main():
    """ACE-Step 1.5 music generation in MLX."""


for command in (generate, describe, convert, reconstruct, train, serve, cache, bench):
    main.add_command(command)

if __name__ == "__main__":
    main()
