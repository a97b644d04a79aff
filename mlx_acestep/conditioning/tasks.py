"""The six tasks' DiT inputs (spec 5.4, 7): instruction, source latents, chunk mask and cover flag.

text2music renders from silence; the editing tasks start from a source
recording's VAE latents:

| task     | instruction                                    | context source                 | chunk mask          | cover |
|----------|------------------------------------------------|--------------------------------|---------------------|-------|
| cover    | Generate audio semantic tokens ...             | FSQ round trip of the source   | 1                   | yes   |
| cover-nofsq | (cover's)                                   | source (upstream's "Remix")    | 1                   | no    |
| repaint  | Repaint the mask area ...                      | source, region silenced        | auto 1; explicit 1 in, 0 out | no  |
| extract  | Extract the TRACK track from the audio:        | source                         | 1                   | no    |
| lego     | Generate the TRACK track based on the audio... | source (not silenced)          | as repaint          | no    |
| complete | Complete the input track with A | B:           | source                         | 1                   | no    |

extract, lego and complete are trained into the base model only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..diffusion.edits import EditHooks
from ..errors import AceStepError, RequestError
from ..limits import HOP, SAMPLE_RATE, SOURCE_SECONDS
from ..names import BASE_ONLY, CHUNK_MASK_MODES, COVER_TASKS, REGION_TASKS, REPAINT_MODES, TASKS, TRACKS  # noqa: F401
from .prompts import instruction


@dataclass(frozen=True)
class Task:
    name: str = "text2music"
    repaint_start: float = 0.0  # seconds; repaint and lego
    repaint_end: float | None = None  # seconds; None: the end of the source
    track: str | None = None  # extract, lego
    tracks: Sequence[str] | None = None  # complete
    cover_strength: float = 1.0  # cover: the share of steps conditioned on the source (spec 5.8)
    repaint_mode: str = "balanced"  # repaint/lego: how much of the source is re-imposed (spec 5.8)
    repaint_strength: float = 0.5
    cover_noise: float = 0.0  # cover: start from the source noised to about 1 - this (upstream's cover_noise_strength)
    chunk_mask_mode: str = "auto"  # repaint/lego: the region marked in the chunk mask (explicit) or not (auto)
    latent_crossfade: int | None = None  # repaint/lego: the latent blend's ramp in frames; None: the mode's
    wav_crossfade: float | None = None  # repaint/lego: the waveform splice's cross-fade in seconds; None: the mode's

    def __post_init__(self):
        if self.name not in TASKS:
            raise RequestError("task", f"unknown task {self.name!r} (choose from {', '.join(TASKS)})")
        for t in ([self.track] if self.track else []) + list(self.tracks or []):
            if t not in TRACKS:
                raise RequestError(
                    "track" if t == self.track else "tracks", f"unknown track {t!r} (choose from {', '.join(TRACKS)})"
                )
        if self.track and self.name not in ("extract", "lego"):
            raise RequestError("track", f"@name@ is for extract and lego, not for {self.name} (complete takes tracks)")
        if self.tracks and self.name != "complete":
            raise RequestError("tracks", f"@name@ are for the complete task, not for {self.name}")
        if not 0.0 <= self.cover_strength <= 1.0:
            raise RequestError("cover_strength", f"@name@ must be between 0 and 1, got {self.cover_strength}")
        if not 0.0 <= self.cover_noise <= 1.0:
            raise RequestError("cover_noise_strength", f"@name@ must be between 0 and 1, got {self.cover_noise}")
        if self.cover_noise and self.name not in COVER_TASKS:
            raise RequestError("cover_noise_strength", f"@name@ is for the cover tasks, not for {self.name}")
        if self.chunk_mask_mode not in CHUNK_MASK_MODES:
            raise RequestError(
                "chunk_mask_mode", f"unknown @name@ {self.chunk_mask_mode!r} (choose {' or '.join(CHUNK_MASK_MODES)})"
            )
        if self.chunk_mask_mode == "explicit" and self.name not in REGION_TASKS:
            raise RequestError("chunk_mask_mode", f"an explicit @name@ is for repaint and lego, not for {self.name}")
        repaint_settings(self.repaint_mode, self.repaint_strength)
        for name, value in (
            ("repaint_latent_crossfade_frames", self.latent_crossfade),
            ("repaint_wav_crossfade_sec", self.wav_crossfade),
        ):
            if value is not None and self.name not in REGION_TASKS:
                raise RequestError(name, f"@name@ is for repaint and lego, not for {self.name}")

    @property
    def needs_source(self) -> bool:
        return self.name != "text2music"

    @property
    def has_region(self) -> bool:
        return self.name in REGION_TASKS

    def repaint_config(self) -> tuple[float, int, float]:
        """(injection share, latent blend ramp in frames, waveform cross-fade in seconds): the mode's, with the
        explicit cross-fades in their place (upstream resolves the mode's and drops its explicit ones)."""
        inject, frames, seconds = repaint_settings(self.repaint_mode, self.repaint_strength)
        frames = frames if self.latent_crossfade is None else self.latent_crossfade
        return inject, frames, seconds if self.wav_crossfade is None else self.wav_crossfade

    def instruction(self) -> str:
        tracks = [self.track] if self.track else list(self.tracks or [])
        return instruction(self.name, tracks)

    def region(self, frames: int, source_frames: int) -> tuple[int, int] | None:
        """The repaint/lego region in latent frames (None for the other tasks)."""
        return region_frames(self.repaint_start, self.repaint_end, frames, source_frames) if self.has_region else None


def check_seconds(seconds: float, what: str = "source audio") -> None:
    """Source and reference recordings last 1 to 600 s."""
    lo, hi = SOURCE_SECONDS
    if not lo <= seconds <= hi:
        raise AceStepError(f"the {what} lasts {seconds:.2f} s; it must last between {lo:g} and {hi:g} s")


def check_source(audio: np.ndarray, what: str = "source audio") -> np.ndarray:
    """A 48 kHz `[samples, 2]` waveform between 1 and 600 s."""
    check_seconds(audio.shape[0] / SAMPLE_RATE, what)
    return audio


def region_frames(start: float, end: float | None, frames: int, source_frames: int) -> tuple[int, int]:
    """Latent frames [a, b) of a region given in seconds (spec 5.4): `int(s * 48000 // 1920)`; end None means
    the end of the source. A region that starts before or after the audio, ends after it, ends at or before
    0 s (upstream's -1 for "the end" is None here) or is inverted is an error."""
    length = source_frames * HOP / SAMPLE_RATE
    if start < 0:
        raise RequestError("repaint_start", f"the region starts at {start:g} s, before the audio (@name@)")
    if end is not None and end <= 0:
        raise RequestError(
            "repaint_end", f"@name@ must be after 0 s, got {end:g} (leave it out for the end of the source)"
        )
    if end is not None and end <= start:
        raise RequestError("repaint_end", f"the region is inverted or empty: start {start:g} s, end {end:g} s (@name@)")
    a = int(start * SAMPLE_RATE // HOP)
    if a >= source_frames:
        raise RequestError(
            "repaint_start", f"the region starts at {start:g} s, after the end of the audio ({length:g} s)"
        )
    if end is not None and int(end * SAMPLE_RATE // HOP) > source_frames:
        raise RequestError("repaint_end", f"the region ends at {end:g} s, after the end of the audio ({length:g} s)")
    b = source_frames if end is None else int(end * SAMPLE_RATE // HOP)
    b = min(b, frames)
    if b <= a:
        raise RequestError("repaint_end", f"the region {start:g}-{end:g} s holds no latent frame")
    return a, b


def fit_frames(latents: mx.array, frames: int, silence: mx.array) -> mx.array:
    """Source latents `[T, C]` cropped or padded with the silence latent's frames to `frames`."""
    if latents.shape[0] >= frames:
        return latents[:frames]
    pad = silence[0, latents.shape[0] : frames].astype(latents.dtype)
    return mx.concatenate([latents, pad], axis=0)


def region_mask(frames: int, region: tuple[int, int]) -> mx.array:
    """`[frames]` bool, True inside the region [a, b)."""
    a, b = region
    return (mx.arange(frames) >= a) & (mx.arange(frames) < b)


def task_context(task: Task, src: mx.array, frames: int, silence: mx.array, region: tuple[int, int] | None):
    """(source latents `[T, C]`, chunk mask `[T]`, is_cover) of one item for the context latents (spec 5.4)."""
    src = fit_frames(src, frames, silence)
    mask = mx.ones((frames,))
    if region is not None:
        inside = region_mask(frames, region)
        # upstream's "auto" writes 2.0 into a bool tensor, which holds True: the DiT sees 1 over the whole item
        # (conditioning_masks.py:74-77; its comment and the spec say 2.0, the code wins)
        if task.chunk_mask_mode == "explicit":
            mask = inside.astype(mx.float32)
        if task.name == "repaint":  # the region is silenced; lego keeps the source under it
            src = mx.where(inside[:, None], silence[0, :frames].astype(src.dtype), src)
    return src, mask, task.name == "cover"  # cover-nofsq keeps the raw latents: no FSQ round trip


# -- repaint's extras (spec 5.8, 5.9): latent injection, blend, waveform splice ---------------------


def repaint_settings(mode: str = "balanced", strength: float = 0.5) -> tuple[float, int, float]:
    """(share of steps with injection, blend ramp in frames, waveform cross-fade in seconds) of a repaint mode."""
    if mode == "aggressive":
        return 0.0, 0, 0.0
    if mode == "conservative":
        return 1.0, 25, 0.05
    if mode != "balanced":
        raise RequestError("repaint_mode", f"unknown repaint mode {mode!r} (choose from {', '.join(REPAINT_MODES)})")
    if not 0.0 <= strength <= 1.0:
        raise RequestError("repaint_strength", f"@name@ must be between 0 and 1, got {strength}")
    return 1.0 - strength, round(25 * (1.0 - strength)), 0.05 * (1.0 - strength)


def region_weights(length: int, a: int, b: int, ramp: int) -> np.ndarray:
    """1 inside [a, b), 0 outside, with linear ramps of up to `ramp` steps just outside (end points excluded). A ramp
    the song's edge cuts short spans its own length, as upstream's `linspace(0, 1, n + 2)[1:-1]` over the clipped span
    (repaint_step_injection.py:50-77, repaint_waveform_splice.py:34-50)."""
    w = np.zeros(length, dtype=np.float32)
    w[a:b] = 1.0
    before, after = a - max(a - ramp, 0), min(b + ramp, length) - b
    if before > 0:
        w[a - before : a] = np.arange(1, before + 1, dtype=np.float32) / np.float32(before + 1)
    if after > 0:
        w[b : b + after] = np.arange(after, 0, -1, dtype=np.float32) / np.float32(after + 1)
    return w


def splice(
    generated: np.ndarray, source: np.ndarray, a: int, b: int, xfade_seconds: float, hop: int = HOP
) -> np.ndarray:
    """Outside the region [a, b) (latent frames) the output is the source waveform, cross-faded over
    `xfade_seconds` on both sides outside the region; `generated` `[samples, 2]`, `source` padded or cut to it."""
    n = generated.shape[0]
    src = np.zeros_like(generated)
    src[: min(n, source.shape[0])] = source[:n]
    w = region_weights(n, a * hop, min(b * hop, n), int(xfade_seconds * SAMPLE_RATE))  # upstream's int()
    return w[:, None] * generated + (1 - w[:, None]) * src


def edit_hooks(task: Task, source: mx.array, frames: int, batch: int, region, silence: mx.array) -> EditHooks | None:
    """The sampler hooks of an editing task (spec 5.8): cover strength's switch (its second condition is
    filled in once encoded) and cover noise's start, repaint/lego's injection and blend; None for the others."""
    if task.name in COVER_TASKS and (task.cover_strength < 1.0 or task.cover_noise > 0):
        clean = mx.broadcast_to(fit_frames(source, frames, silence)[None], (batch, frames, source.shape[-1]))
        return EditHooks(switch_fraction=task.cover_strength, source=clean, cover_noise=task.cover_noise)
    if region is None:
        return None
    inject, ramp, _ = task.repaint_config()
    clean = fit_frames(source, frames, silence)
    inside = region_mask(frames, region)
    # no ramp, no blend: upstream blends only with crossfade frames above 0 (modeling_acestep_v15_turbo.py:2214)
    blend = None if ramp <= 0 else mx.array(region_weights(frames, *region, ramp))[None, :, None]
    return EditHooks(
        source=mx.broadcast_to(clean[None], (batch, *clean.shape)),
        keep=mx.broadcast_to((~inside)[None, :, None], (batch, frames, 1)),
        inject_fraction=inject,
        blend=None if blend is None else mx.broadcast_to(blend, (batch, frames, 1)),
    )
