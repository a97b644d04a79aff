"""`generate`'s memory flags: the VAE's window (pipeline/memory.py)."""

from __future__ import annotations

import click

from ..limits import VAE_WINDOW


def memory_options(fn):
    return click.option(
        "--vae-window",
        type=click.IntRange(*VAE_WINDOW),
        default=None,
        help="The VAE decodes in windows of this many latent frames (25 a second; default: by the machine's memory "
        "on Metal, as upstream: up to 16 GB 256, 36 GB 512, 64 GB 1024, more 2048; 256 elsewhere). Smaller windows "
        "lower the decode's peak memory; the audio is the same.",
    )(fn)


def pipeline_options(params: dict) -> dict:
    """The pipeline's keyword arguments of the memory flags."""
    return {"vae_chunk": params["vae_window"]}
