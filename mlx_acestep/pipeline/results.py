"""What a generation reports and returns: progress events, cancellation, the result object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from ..audio import save_audio
from ..errors import AceStepError


@dataclass(frozen=True)
class Progress:
    """What `callback` receives: `done` of `total` units of `phase` are finished."""

    phase: str
    done: int
    total: int


class Cancelled(AceStepError):
    """The progress callback returned False."""


ProgressCallback = Callable[[Progress], "bool | None"]


def reporter(callback: ProgressCallback | None) -> Callable[[str, int, int], None]:
    """`report(phase, done, total)`: calls `callback`, and raises `Cancelled` when it returns False."""

    def report(phase: str, done: int, total: int) -> None:
        if callback is not None and callback(Progress(phase, done, total)) is False:
            raise Cancelled(f"generation cancelled during {phase}")

    return report


@dataclass
class GenerationResult:
    audio: np.ndarray  # [B, samples, channels] float32, post-processed
    sample_rate: int
    seeds: list[int]
    duration: float  # seconds of audio per item
    seconds: dict[str, float]  # per phase (and "load")
    peak_memory: dict[str, int]  # bytes, MLX's peak during each phase (weights included)
    latents: np.ndarray  # [B, T, 64] float32, what the VAE decoded
    metadata: list[dict] = field(default_factory=list)  # per item, what the planner chose (empty without thinking)
    codes: np.ndarray | None = None  # [B, int(5 d)] the planner's audio codes

    @property
    def compute_seconds(self) -> float:
        return sum(v for k, v in self.seconds.items() if k != "load")

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def rtf(self) -> float:
        """Seconds of audio made per second of compute (higher is faster, as ACE-Step reports it); loading excluded."""
        return self.duration * len(self.audio) / max(self.compute_seconds, 1e-9)

    @property
    def peak_memory_bytes(self) -> int:
        return max(self.peak_memory.values(), default=0)

    def save(self, path: str | Path, subtype: str | None = None) -> list[Path]:
        """Write each item (`.wav` or `.flac`, atomically); a batch gets `name_0.wav`, `name_1.wav`, ..."""
        path = Path(path)
        paths = [path] if len(self.audio) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(self.audio))]
        return [save_audio(p, a, self.sample_rate, subtype) for p, a in zip(paths, self.audio)]


@dataclass
class Generated:
    """The raw outputs of one run, before post-processing (what the parity fixtures store)."""

    text_hidden_states: mx.array
    lyric_hidden_states: mx.array
    latents: mx.array  # [B, T, 64]
    waveform: mx.array  # [B, T * 1920, 2]
