"""Audio files in and out: 48 kHz stereo float32, channels-last `[samples, 2]`.

Reading: anything libsndfile (through soundfile) decodes. Mono is duplicated to
stereo; files with more than two channels keep the first two (front left and
right). Other sample rates are resampled to 48 kHz with windowed-sinc
interpolation, the method and parameters of torchaudio's default
`functional.resample` (Hann window, 6 zero crossings, roll-off 0.99), which is
what the reference pipeline uses; the result is clamped to [-1, 1] like the
reference's loader.

Writing is atomic: a temporary file beside the target, renamed when complete.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import AceStepError
from .files import atomic_file, out_of_space, remove_stale
from .limits import SAMPLE_RATE
from .names import AUDIO_FORMATS

# File suffix -> (libsndfile format, default subtype), for the names.AUDIO_FORMATS that this libsndfile encodes (MP3
# and Opus since 1.1; soundfile's wheels bundle one): a format it cannot write is refused by name, never written as
# another.
_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_24"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".opus": ("OGG", "OPUS"),
}
_FORMATS = {s: f for s, f in _FORMATS.items() if f[0] in sf.available_formats() and f[1] in sf.available_subtypes(f[0])}
WRITABLE = tuple(s.lstrip(".") for s in _FORMATS)
# MP3 as upstream writes it (audio_utils.py:117-119: 128 kbit/s constant, 48 kHz): libsndfile's constant bitrate
# runs from 320 kbit/s at compression level 0 down to 32 at 1 (measured: 0.5 gives 160, 0.7 gives 112), so this.
_MP3 = {"bitrate_mode": "CONSTANT", "compression_level": (320 - 128) / (320 - 32)}


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read `path` as float32 `[samples, 2]` at `sample_rate`."""
    path = Path(path)
    if not path.is_file():
        raise AceStepError(f"{path}: audio file not found")
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AceStepError(f"{path}: cannot decode audio ({e})") from None
    if audio.shape[0] == 0:
        raise AceStepError(f"{path}: audio file holds no samples")
    if not np.isfinite(audio).all():  # float WAV / FLAC can store them; the model would turn them into noise or silence
        raise AceStepError(f"{path}: the audio holds NaN or infinite samples")
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    audio = audio[:, :2]
    if sr != sample_rate:
        audio = resample(audio, sr, sample_rate)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _sinc_kernel(orig: int, new: int, zero_crossings: int = 6, rolloff: float = 0.99) -> tuple[np.ndarray, int]:
    """Polyphase windowed-sinc filter bank `[new, taps]` for reduced rates orig -> new."""
    base = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx[None, :]) * base
    t = np.clip(t, -zero_crossings, zero_crossings)
    window = np.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = np.where(t == 0, 1.0, np.sin(t) / t)
    return (kernel * window * base / orig).astype(np.float32), width


def resample(audio: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Resample `[samples, channels]` from `orig_sr` to `new_sr` (torchaudio's sinc_interp_hann)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise AceStepError(f"invalid sample rate {orig_sr} -> {new_sr}")
    if orig_sr == new_sr:
        return audio
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    kernel, width = _sinc_kernel(orig, new)
    n = audio.shape[0]
    padded = np.pad(audio.astype(np.float32), ((width, width + orig), (0, 0)))
    out = []
    for ch in range(audio.shape[1]):
        frames = np.lib.stride_tricks.sliding_window_view(padded[:, ch], kernel.shape[1])[::orig]
        out.append((frames @ kernel.T).reshape(-1))
    target = math.ceil(new * n / orig)
    return np.stack(out, axis=1)[:target]


def peak_limit(audio: np.ndarray) -> np.ndarray:
    """Divide by the peak where it exceeds 1, as the reference does after the VAE (per item for `[B, ...]`)."""
    audio = np.asarray(audio, dtype=np.float32)
    axes = tuple(range(1, audio.ndim)) if audio.ndim == 3 else None
    peak = np.max(np.abs(audio), axis=axes, keepdims=axes is not None)
    return audio / np.maximum(peak, 1.0)


def normalize_gain(peak: float, target_db: float = -1.0) -> np.float32 | None:
    """The factor that puts a peak of `peak` at `target_db` dBFS; None for silence (left alone)."""
    return None if peak < 1e-6 else np.float32(10 ** (target_db / 20) / peak)


def peak_normalize(audio: np.ndarray, target_db: float = -1.0) -> np.ndarray:
    """Scale so the peak sits at `target_db` dBFS, up or down (the reference's default -1 dB); silence is left alone."""
    audio = np.asarray(audio, dtype=np.float32)
    gain = normalize_gain(float(np.max(np.abs(audio))) if audio.size else 0.0, target_db)
    return audio if gain is None else audio * gain


def finish_blocks(raw_peak: np.float32, normalize: bool):
    """`peak_limit` then (with `normalize`) `peak_normalize` of one item, as a function applied block by block once
    the raw VAE output's peak is known: the same float32 operations on each sample, so the same bits. Division
    by a positive constant is monotone, so the limited song's peak is the limited raw peak."""
    divisor = np.maximum(np.float32(raw_peak), np.float32(1.0))
    gain = normalize_gain(float(np.float32(raw_peak) / divisor)) if normalize else None
    return lambda block: block / divisor if gain is None else (block / divisor) * gain


def check_output(path: str | Path, overwrite: bool = False) -> Path:
    """An output file name we may write: a known format, an existing folder, nothing there unless `overwrite`."""
    path = Path(path)
    if path.suffix.lower() not in _FORMATS:
        raise AceStepError(f"{path}: {format_refusal(path.suffix.lstrip('.'))}")
    if not (path.parent if str(path.parent) else Path(".")).is_dir():
        raise AceStepError(f"{path.parent}: output folder does not exist")
    if path.is_dir():
        raise AceStepError(f"{path}: is a folder; give a file name")
    if os.path.lexists(path) and not overwrite:  # lexists: a dangling link is a name taken too
        raise AceStepError(f"{path}: already exists (pass --overwrite, or overwrite=True, to replace it)")
    return path


def format_refusal(name: str) -> str:
    """Why a format is not written: unknown, or one this libsndfile cannot encode."""
    known = name.lower() in AUDIO_FORMATS
    why = (
        f"this libsndfile ({sf.__libsndfile_version__}) cannot encode {name}" if known else "unsupported output format"
    )
    return f"{why} (use {', '.join(WRITABLE)})" if name else f"no audio format given (use {', '.join(WRITABLE)})"


TAGS = ("title", "comment", "software", "artist", "date", "album", "genre")  # libsndfile's string fields we write


def save_audio(
    path: str | Path,
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    subtype: str | None = None,
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
) -> Path:
    """Write `[samples, channels]` float audio to .wav, .flac, .mp3 or .opus (`WRITABLE`), atomically; an existing file is replaced only
    with `overwrite` (also when it appears while writing). Non-finite samples are an error, not a file.
    `tags` (title, comment, software, ...) go into the file's INFO chunk (WAV), Vorbis comments (FLAC, Opus) or ID3
    tags (MP3)."""
    path = check_output(path, overwrite)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise AceStepError(f"cannot write {path}: audio must be [samples, channels], got {audio.shape}")
    if not np.isfinite(audio).all():
        raise AceStepError(f"cannot write {path}: the audio holds NaN or infinite samples")
    remove_stale(path.parent if str(path.parent) else Path("."))  # what a killed earlier run left half-written
    try:
        with (
            atomic_file(path, overwrite) as tmp,
            sound_file(tmp, path, sample_rate, audio.shape[1], subtype, tags) as f,
        ):
            f.write(audio)
    except FileExistsError:
        raise AceStepError(f"{path}: appeared while writing; it was left as it is") from None
    return path


@contextlib.contextmanager
def sound_file(tmp: Path, path: Path, sample_rate: int, channels: int, subtype: str | None, tags: dict | None):
    """`tmp` open for writing in `path`'s format with `tags`; libsndfile's own errors (a full disk, no permission)
    come out as OSError."""
    fmt = _FORMATS[path.suffix.lower()]
    try:
        extra = _MP3 if fmt[0] == "MP3" else {}
        with sf.SoundFile(str(tmp), "w", sample_rate, channels, subtype or fmt[1], format=fmt[0], **extra) as f:
            for key, value in (tags or {}).items():
                if key in TAGS and value:
                    setattr(f, key, str(value))
            yield f
    except (sf.LibsndfileError, RuntimeError) as e:
        if out_of_space(tmp.parent):  # libsndfile says only "System error." when the disk fills
            raise OSError(errno.ENOSPC, f"no space left on {tmp.parent}") from None
        raise OSError(str(e).split(": ", 1)[-1] or "write failed") from None
