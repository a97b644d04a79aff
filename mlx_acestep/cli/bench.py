"""`mlx-acestep bench`: runs the source checkout's `benchmarks/bench_pipeline.py` (not part of the installed package)."""

from __future__ import annotations

import click

from ..errors import AceStepError
from .common import user_errors


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
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
        raise AceStepError(
            'the benchmarks live in the source checkout (git clone the project, pip install -e ".[bench]", '
            "then run `mlx-acestep bench` or `python benchmarks/bench_pipeline.py` there)"
        )
    raise SystemExit(subprocess.call([sys.executable, str(script), *args], env=dict(os.environ)))
