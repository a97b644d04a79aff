"""The editing tasks' recordings: read (a file at any rate, or an array), checked, VAE-encoded."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from ..audio import load_audio
from ..errors import AceStepError
from .tasks import check_source


def read_audio(audio: str | Path | np.ndarray, what: str = "source audio") -> np.ndarray:
    """A recording (file at any rate, or a 48 kHz `[samples, channels]` array) as 48 kHz stereo, 1-600 s."""
    if isinstance(audio, (str, Path)):
        wave = load_audio(audio)
    else:
        wave = np.asarray(audio, dtype=np.float32)
        if wave.ndim == 1:
            wave = wave[:, None]
        if wave.ndim != 2 or wave.shape[1] not in (1, 2):
            raise AceStepError(f"the {what} must be [samples, channels] with 1 or 2 channels, got {wave.shape}")
        wave = np.repeat(wave, 2, axis=1) if wave.shape[1] == 1 else wave
    return check_source(wave, what)


def latents_input(x, what: str, channels: int) -> mx.array:
    """Already-encoded audio given as `[T, C]` (or `[1, T, C]`) latents."""
    x = mx.array(np.asarray(x, dtype=np.float32)) if not isinstance(x, mx.array) else x
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or x.shape[1] != channels:
        raise AceStepError(f"{what} must be [frames, {channels}], got {tuple(x.shape)}")
    return x


def encode_wave(vae, wave: np.ndarray, seed: int, chunk: int, overlap: int,
                progress: Callable[[int, int], None] | None = None) -> mx.array:
    """A 48 kHz stereo waveform -> VAE latents `[T, 64]`, a seeded draw from the posterior as the reference
    samples it (spec 5.10; the reference's draw is unseeded)."""
    mean, std = vae.encode_moments_chunked(mx.array(wave)[None], chunk, overlap, progress=progress)
    latents = vae.sample(mean, std, key=mx.random.key(seed))[0]
    mx.eval(latents)
    return latents
