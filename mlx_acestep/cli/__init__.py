"""The `mlx-acestep` command line: one sub-command per verb, each in its own module.

Importing this module (what `--help` and `--version` do) imports neither mlx,
mlx-lm nor transformers: each verb imports what it needs when it runs.
"""

from __future__ import annotations

import functools

import click

from .. import __version__
from ..errors import AceStepError


def user_errors(fn):
    """Turn AceStepError into a one-line `Error: ...` and exit code 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AceStepError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mlx-acestep")
def main():
    """ACE-Step 1.5 music generation in MLX."""


from . import convert, generate  # noqa: E402,F401  (they register their verbs on `main`)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def bench(args):
    """Real-time factor and peak memory per phase, MLX beside the PyTorch reference (`mlx-acestep bench --help`).

    The benchmark and its PyTorch reference runners live in the source checkout's `benchmarks/`
    (they are not part of the installed package): this runs `benchmarks/bench_pipeline.py`.
    """
    import os
    import subprocess
    import sys

    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pipeline.py"
    if not script.is_file():
        raise AceStepError("the benchmarks live in the source checkout (git clone the project, pip install -e \".[bench]\", "
                           "then run `mlx-acestep bench` or `python benchmarks/bench_pipeline.py` there)")
    raise SystemExit(subprocess.call([sys.executable, str(script), *args], env=dict(os.environ)))


if __name__ == "__main__":
    main()
