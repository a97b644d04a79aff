"""`mlx-acestep convert` and `mlx-acestep reconstruct`: checkpoints in, and a quick listen to a converted VAE."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import AceStepError
from ..limits import DTYPE_CHOICES, GROUP_SIZES, QUANTIZE_CHOICES, SAMPLE_RATE, VAE_CHUNK, VAE_OVERLAP
from .common import progress_bar, user_errors


@click.command()
@click.argument("src", type=click.Path(path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option(
    "--dtype",
    type=click.Choice(DTYPE_CHOICES),
    default="auto",
    show_default=True,
    help="Storage and compute dtype of the converted weights (auto: bfloat16 on a GPU, float32 on the CPU).",
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE_CHOICES),
    default="none",
    show_default=True,
    help="Quantize the linear layers that allow it (convolutions, hence the VAE, stay in --dtype).",
)
@click.option(
    "--q-group-size",
    type=click.Choice([str(g) for g in GROUP_SIZES]),
    default="64",
    show_default=True,
    help="Quantization group size.",
)
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@user_errors
def convert(src, dst, dtype, quantize, q_group_size, force):
    """Convert the PyTorch checkpoints under SRC into MLX folders in DST.

    SRC is a checkpoint root in the original ACE-Step 1.5 layout (vae/,
    acestep-v15-*/, Qwen3-Embedding-0.6B/, acestep-5Hz-lm-*/), a diffusers
    pipeline folder (model_index.json, transformer/, condition_encoder/, ...;
    written out under the original folder names) or a single component folder. DST is written atomically and gets one folder per
    converted component. Components not supported yet are listed as skipped.
    """
    from ..convert import ConvertOptions, convert_checkpoints

    opts = ConvertOptions(dtype=dtype, quantize=quantize, group_size=int(q_group_size), force=force)
    report = convert_checkpoints(src, dst, opts, log=click.echo)
    click.echo(
        f"wrote {len(report.converted)} component(s) to {dst}"
        + (f", skipped {len(report.skipped)}" if report.skipped else "")
    )


@click.command()
@click.argument("audio_in", type=click.Path(path_type=str))
@click.argument("audio_out", type=click.Path(path_type=str))
@click.option(
    "--vae",
    "vae_dir",
    required=True,
    type=click.Path(path_type=str),
    help="Converted VAE folder (DST/vae from `mlx-acestep convert`).",
)
@click.option("--chunk", default=VAE_CHUNK, show_default=True, help="Decode window in latent frames (25 per second).")
@click.option("--overlap", default=VAE_OVERLAP, show_default=True, help="Frames of context on each side of a window.")
@click.option(
    "--sample/--mean",
    default=False,
    show_default=True,
    help="Decode a draw from the latent distribution (as the reference pipeline does) or its mean.",
)
@click.option("--seed", default=0, show_default=True, help="Seed for --sample.")
@click.option("--overwrite", is_flag=True, help="Replace AUDIO_OUT if it exists (else that is an error).")
@user_errors
def reconstruct(audio_in, audio_out, vae_dir, chunk, overlap, sample, seed, overwrite):
    """Encode AUDIO_IN with the VAE and decode it back into AUDIO_OUT (.wav or .flac).

    A quick check of a converted VAE and of what its 25 Hz latents keep.
    Input of any format libsndfile reads is resampled to 48 kHz stereo.
    """
    import mlx.core as mx
    import numpy as np

    from ..audio import check_output, load_audio, peak_limit, save_audio
    from ..loading import load_component

    if chunk <= 0 or overlap < 0:
        raise AceStepError(f"--chunk must be positive and --overlap non-negative (got {chunk}, {overlap})")
    if Path(audio_out).exists() and Path(audio_in).exists() and Path(audio_out).resolve() == Path(audio_in).resolve():
        raise AceStepError(f"{audio_out}: is AUDIO_IN; choose another output name")
    check_output(audio_out, overwrite)
    audio = load_audio(audio_in)
    vae = load_component(vae_dir, "vae")
    x = mx.array(audio)[None]
    with progress_bar("encoding") as advance:
        mean, std = vae.encode_moments_chunked(x, progress=advance)
    latents = vae.sample(mean, std, key=mx.random.key(seed)) if sample else mean
    parts = []
    with progress_bar("decoding") as advance:
        for done, total, piece in vae.iter_decode(latents, chunk=chunk, overlap=overlap):
            advance(done, total)
            parts.append(np.array(piece))
    wave = peak_limit(np.concatenate(parts, axis=0))
    save_audio(audio_out, wave, overwrite=overwrite)
    click.echo(f"wrote {audio_out}: {len(wave) / SAMPLE_RATE:.2f} s, {latents.shape[1]} latent frames")
