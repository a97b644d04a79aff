"""`generate`'s memory flags: the VAE's window and --force past the fit check (pipeline/memory.py, fit.py)."""

from __future__ import annotations

import click

from ..errors import AceStepError
from ..limits import VAE_WINDOW


def memory_options(fn):
    fn = click.option(
        "--force",
        is_flag=True,
        help="Run even when the estimate says the song will not fit in the device's memory (checked before "
        "loading: on Metal against the recommended working set, elsewhere the machine's memory).",
    )(fn)
    return click.option(
        "--vae-window",
        type=int,
        default=None,
        help="The VAE decodes in windows of this many latent frames (25 a second; default: by the machine's memory "
        "on Metal, as upstream: up to 16 GB 256, 36 GB 512, 64 GB 1024, more 2048; 256 elsewhere). Smaller windows "
        "lower the decode's peak memory; the audio is the same.",
    )(fn)


def pipeline_options(params: dict) -> dict:
    """The pipeline's keyword arguments of the memory flags (a window out of range is a one-line error)."""
    window = params["vae_window"]
    if window is not None and not VAE_WINDOW[0] <= window <= VAE_WINDOW[1]:
        raise AceStepError(f"--vae-window must be {VAE_WINDOW[0]} to {VAE_WINDOW[1]} latent frames (got {window})")
    return {"vae_chunk": params["vae_window"], "check_memory": not params["force"]}
