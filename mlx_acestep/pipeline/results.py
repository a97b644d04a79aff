"""What a generation reports and returns: progress events, cancellation, the result object."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..audio import check_output, save_audio
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


def reporter(callback: ProgressCallback | None, cancel=None) -> Callable[[str, int, int], None]:
    """`report(phase, done, total)`: calls `callback`, and raises `Cancelled` when it returns False or the
    `cancel` event (a `threading.Event`: the caller pressed Ctrl-C) is set."""

    def report(phase: str, done: int, total: int) -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"generation interrupted during {phase}")
        if callback is not None and callback(Progress(phase, done, total)) is False:
            raise Cancelled(f"generation cancelled during {phase}")

    return report


def item_paths(path: str | Path, count: int) -> list[Path]:
    """The files a result of `count` items is saved as: `path` itself, or `name_0.wav`, `name_1.wav`, ..."""
    path = Path(path)
    return [path] if count == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]


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
    sheets: list = field(default_factory=list)  # what the planner wrote first (sample, format): SongSheets
    request: object = None  # the request as rendered: with what the planner wrote (its replay needs no planner)

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

    def paths(self, path: str | Path) -> list[Path]:
        return item_paths(path, len(self.audio))

    def save(
        self, path: str | Path, subtype: str | None = None, overwrite: bool = False, tags: list[dict] | None = None
    ) -> list[Path]:
        """Write each item (`.wav` or `.flac`, atomically); a batch gets `name_0.wav`, `name_1.wav`, ...
        `tags` holds one dict of file tags per item (see `audio.save_audio`).

        An existing file is an error (before anything is written) unless `overwrite`. If writing fails (a full
        disk, a lost permission), the audio is saved in the temporary folder instead and the error names both,
        so minutes of work are never lost to a save.
        """
        return self.save_as(self.paths(path), subtype, overwrite, tags)

    def save_as(
        self, paths: list[Path], subtype: str | None = None, overwrite: bool = False, tags: list[dict] | None = None
    ) -> list[Path]:
        """`save` with one path per item."""
        paths = [Path(p) for p in paths]
        if len(paths) != len(self.audio):
            raise AceStepError(f"{len(paths)} paths for {len(self.audio)} items")
        for p in paths:
            check_output(p, overwrite)
        written = []
        for i, (p, audio) in enumerate(zip(paths, self.audio)):
            try:
                written.append(save_audio(p, audio, self.sample_rate, subtype, overwrite, tags[i] if tags else None))
            except OSError as e:
                rescued = self._rescue(i, p.suffix, subtype)
                raise AceStepError(
                    f"could not write {p} ({e.strerror or e}); "
                    + (
                        f"the audio was saved to {', '.join(map(str, rescued))} instead"
                        if rescued
                        else f"nor a copy in {tempfile.gettempdir()}: the audio is lost"
                    )
                ) from None
        return written

    def _rescue(self, first: int, suffix: str, subtype: str | None) -> list[Path]:
        """The items from `first` on, written to the temporary folder under names that cannot collide."""
        folder = Path(tempfile.gettempdir())
        out = []
        try:
            for i in range(first, len(self.audio)):
                name = f"acestep-rescued-{self.seeds[i]}-{os.getpid()}-{i}{suffix}"
                out.append(save_audio(folder / name, self.audio[i], self.sample_rate, subtype))
        except (OSError, AceStepError):
            pass
        return out


@dataclass
class Generated:
    """The raw outputs of one run, before post-processing (what the parity fixtures store)."""

    text_hidden_states: mx.array
    lyric_hidden_states: mx.array
    latents: mx.array  # [B, T, 64]
    waveform: mx.array  # [B, T * 1920, 2]
