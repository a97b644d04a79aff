"""The editing tasks' recordings: read (a file at any rate, or an array) and checked (the engine encodes them)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from ..audio import load_audio
from ..errors import AceStepError, RequestError
from ..limits import HOP, SAMPLE_RATE
from .tasks import check_seconds, check_source


def pcm_to_float(audio, what: str) -> np.ndarray:
    """An array of samples as float32 in [-1, 1]: floats as they are, integer PCM scaled by its full range
    (int16 / 32768, as soundfile reads it; unsigned 8-bit centred on 128); anything else is an error."""
    try:
        a = np.asarray(audio)
    except (TypeError, ValueError) as e:
        raise AceStepError(f"the {what} is not an array of samples ({e})") from None
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(a.dtype, np.signedinteger):
        return (a.astype(np.float64) / float(2 ** (8 * a.dtype.itemsize - 1))).astype(np.float32)
    raise AceStepError(f"the {what} has samples of type {a.dtype}; give float samples in [-1, 1] or integer PCM")


def read_audio(audio: str | Path | np.ndarray, what: str = "source audio") -> np.ndarray:
    """A recording (a file at any rate, or a 48 kHz `[samples, channels]` array: float in [-1, 1] or integer PCM)
    as 48 kHz stereo float32, 1-600 s, every sample finite."""
    if isinstance(audio, (str, Path)):
        wave = load_audio(audio)
    else:
        wave = pcm_to_float(audio, what)
        if not np.isfinite(wave).all():
            raise AceStepError(f"the {what} holds NaN or infinite samples")
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


def audio_file_seconds(path: str | Path, name: str) -> float:
    """The length of an audio file, checked to be present, decodable and 1 to 600 s long (without reading it)."""
    import soundfile as sf

    if not Path(path).is_file():
        raise RequestError(name, f"@name@ {path}: file not found")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise RequestError(name, f"@name@ {path}: cannot decode audio ({e})") from None
    try:
        check_seconds(info.duration, f"{name} {path}")
    except AceStepError as e:
        raise RequestError(name, str(e).replace(f"{name} {path}", f"@name@ {path}", 1)) from None
    return info.duration


def source_frames(src_audio, src_latents) -> int | None:
    """The source's length in latent frames, when it is known without decoding anything."""
    if isinstance(src_audio, (str, Path)):
        import soundfile as sf

        return int(sf.info(str(src_audio)).duration * SAMPLE_RATE) // HOP
    if src_audio is not None:
        shape = np.shape(src_audio)
        return shape[0] // HOP if shape else None
    if src_latents is not None:
        shape = tuple(np.shape(src_latents))
        return shape[-2] if len(shape) >= 2 else None
    return None
