"""The `mlx-acestep` command line: one sub-command per verb."""

from __future__ import annotations

import functools

import click

from . import __version__
from .errors import AceStepError


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


@main.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option(
    "--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
    help="Storage and compute dtype of the converted weights.",
)
@click.option(
    "--quantize", type=click.Choice(["none", "q8", "q4"]), default="none", show_default=True,
    help="Quantize the linear layers that allow it (convolutions, hence the VAE, stay in --dtype).",
)
@click.option("--q-group-size", type=click.Choice(["32", "64", "128"]), default="64", show_default=True,
              help="Quantization group size.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@user_errors
def convert(src, dst, dtype, quantize, q_group_size, force):
    """Convert the PyTorch checkpoints under SRC into MLX folders in DST.

    SRC is a checkpoint root in the original ACE-Step 1.5 layout (vae/,
    acestep-v15-*/, Qwen3-Embedding-0.6B/, acestep-5Hz-lm-*/) or a single
    component folder. DST is written atomically and gets one folder per
    converted component. Components not supported yet are listed as skipped.
    """
    from mlx_acestep_convert import ConvertOptions, convert_checkpoints

    opts = ConvertOptions(dtype=dtype, quantize=quantize, group_size=int(q_group_size), force=force)
    report = convert_checkpoints(src, dst, opts, log=click.echo)
    click.echo(f"wrote {len(report.converted)} component(s) to {dst}" + (f", skipped {len(report.skipped)}" if report.skipped else ""))


if __name__ == "__main__":
    main()
