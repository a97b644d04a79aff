"""`ACEStep.generate_stream`: the song window by window as the VAE decodes it.

The pipeline runs on its own thread (`worker.py`) and hands each decoded window over a small bounded queue, so
the waveform is never held whole: a slow reader holds the VAE back (at most `AHEAD` windows wait), and a reader
that stops (breaks out, Ctrl-C, `close()`) cancels the run at its next window or progress event.

Chunks are final in place and order (the windows' overlap is already resolved; items one after another) but are
the VAE's raw output: peak limiting and the -1 dBFS normalisation need the whole song's peak, so a stream does
neither and never applies repaint's waveform splice (a stream of such a repaint is refused). `finish_blocks`
(audio.py) turns the raw peak into the exact post-processing of `generate`; `audio_stream.save_stream` uses it.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import AceStepError
from ..limits import HOP, SAMPLE_RATE, seconds_of
from .results import Cancelled

AHEAD = 4  # windows decoded ahead of the reader: bounds memory, keeps the VAE busy while a player reads


class Chunk(NamedTuple):
    """Item `item`'s samples `[start, start + len(audio))`: `audio` is `[n, channels]` float32, the VAE's raw output."""

    item: int
    start: int
    audio: np.ndarray


@dataclass(frozen=True)
class StreamInfo:
    """What is known before the first window: per item `samples` long, and the sidecar's inputs."""

    seeds: list[int]
    samples: int
    sample_rate: int
    duration: float
    metadata: list[dict]
    request: object
    sheets: list


class GenerationStream:
    """Iterate for `Chunk`s; `info` (waits for it) is there before the first; `result` (timings, latents,
    metadata; its `audio` empty) once the iteration ended."""

    def __init__(self, worker, run):
        self._worker, self._queue, self._closed = worker, queue.Queue(AHEAD), threading.Event()
        self._info: StreamInfo | None = None
        self.result = None
        self._future = worker.submit(lambda: run(self))
        self._future.add_done_callback(lambda _: self._put(("end", None), dropping=True))

    # -- the worker's side ----------------------------------------------------------------------

    def _put(self, record, dropping: bool = False) -> None:
        while True:
            try:
                return self._queue.put(record, timeout=0.05)
            except queue.Full:
                if self._closed.is_set():
                    if dropping:
                        return
                    raise Cancelled("the stream's reader stopped") from None

    def started(self, info: StreamInfo) -> None:
        self._put(("info", info))

    def sink(self, samples: int):
        """`sink(item, start, audio)` for the VAE: numpy on the worker thread (no MLX crosses threads), cut at the
        song's length as `generate` cuts the waveform."""

        def put(item, start, audio) -> None:
            if start < samples:
                self._put(("chunk", Chunk(item, start, np.array(audio[: samples - start], dtype=np.float32))))

        return put

    # -- the reader's side ----------------------------------------------------------------------

    def _get(self):
        kind, value = self._queue.get()
        if kind == "end":
            self._closed.set()
            self.result = self._future.result()  # the run's error, if any, is raised here
            raise AceStepError("the stream ended before the song started")  # unreachable: a run starts first
        return kind, value

    @property
    def info(self) -> StreamInfo:
        if self._info is None:
            self._info = self._get()[1]
        return self._info

    def __iter__(self):
        self.info  # noqa: B018 (waits for the start)
        try:
            while True:
                kind, value = self._queue.get()
                if kind == "end":
                    break
                yield value
            self.result = self._future.result()
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading: a run still going is cancelled at its next window or progress event."""
        if self._closed.is_set():
            return
        self._closed.set()
        if not self._future.done():
            cancel = self._worker.cancel
            cancel.set()
            self._future.add_done_callback(lambda _: cancel.clear())

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def streamable(request) -> bool:
    """Whether `generate_stream` can run `request`: all but a repaint spliced into its source audio's waveform
    (`postprocess`: a region with a source waveform, in a mode other than aggressive)."""
    job = request.job
    return not (job.has_region and request.src_audio is not None and job.repaint_mode != "aggressive")


def start_stream(stream: GenerationStream, prepared, request, seeds, sheets):
    """Tell the reader what is coming (before the DiT runs) and return the VAE's sink; a repaint whose output is
    spliced into its source's waveform cannot stream (the splice crossfades across the whole region)."""
    if not streamable(request):
        raise AceStepError(
            "repaint_mode: a stream cannot splice the repainted region into the source's waveform; "
            "use generate, or repaint_mode='aggressive'"
        )
    frames = prepared.frames
    info = StreamInfo(
        seeds, frames * HOP, SAMPLE_RATE, seconds_of(frames), [p.metadata for p in prepared.plans], request, sheets
    )
    stream.started(info)
    return stream.sink(frames * HOP)
