"""After the VAE: peak limiting, repaint's waveform splice, -1 dBFS normalisation (spec 5.9)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..audio import peak_limit, peak_normalize
from ..conditioning.tasks import Task, splice


def postprocess(
    waveform: mx.array, samples: int, job: Task, source_wave: np.ndarray | None, region, normalize: bool
) -> np.ndarray:
    """`[B, samples, 2]` -> numpy, as the reference library finishes a generation; cut to `samples` (a clip shorter
    than the DiT's MIN_FRAMES) after the peak limit, which the reference applies to the whole decode."""
    # as the reference right after the VAE: per item, only above 1
    audio = peak_limit(np.array(waveform.astype(mx.float32)))[:, :samples]
    if region and source_wave is not None and job.repaint_mode != "aggressive":
        xfade = job.repaint_config()[2]
        audio = np.stack([splice(a, source_wave, *region, xfade) for a in audio])
    if normalize:  # the reference library's default: peak at -1 dBFS
        audio = np.stack([peak_normalize(a) for a in audio])
    return audio
