"""An extension: a job's decoded audio, window by window, to the `/v1/tasks/{id}/events?audio=true` subscribers.

Every job that can stream (`pipeline.stream.streamable`: all but a repaint spliced into its source's waveform) runs
through `generate_stream`, its files written by `audio_stream.save_stream`: the same bytes as `result.save` writes
for `generate` (Opus: the same samples; libsndfile draws each Ogg stream's serial number), and the song is never
held whole. On the way each window is handed to the audio subscribers connected at that moment and kept by nobody
else: a late subscriber gets the windows decoded after it connected (each says where it starts) and the whole song
from the files the `result` event names. A subscriber more than `BACKLOG` windows behind loses its audio (one
`audio_lost` event) rather than hold the job or the server's memory.

The PCM is little-endian float32, base64: the VAE's raw output exactly. Its peak may pass 1.0 (the file is peak
limited and normalised once the whole song's peak is known, `audio.finish_blocks`), which int16 would clip, and a
client can reproduce the file's samples from it; it costs twice int16's bytes (about 512 kB/s of base64 per item).
"""

from __future__ import annotations

import base64
import queue
import threading
from pathlib import Path

import numpy as np

from ..errors import AceStepError, first_line

BACKLOG = 8  # windows a subscriber may fall behind (the VAE's 256-frame window is 3.9 MB of stereo float32)
ENCODING = "f32le"


class Subscription:
    """One client's windows, in order, until it leaves or falls `BACKLOG` behind (`lost`)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue(BACKLOG)
        self.lost = False

    def drain(self):
        """The windows waiting, taken one at a time (one held by a client's blocked send, never the backlog twice)."""
        while True:
            try:
                yield self.queue.get_nowait()
            except queue.Empty:
                return


class Windows:
    """A job's audio subscribers: each window decoded goes to those connected then, and is kept by none else."""

    def __init__(self):
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription()
        with self._lock:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    def __len__(self) -> int:
        """The subscribers connected."""
        return len(self._subscribers)

    def publish(self, window: tuple) -> None:
        """On the job's thread: never waits for a client."""
        with self._lock:
            subscribers = list(self._subscribers)
        for sub in subscribers:
            try:
                sub.queue.put_nowait(window)
            except queue.Full:
                sub.lost = True
                self.unsubscribe(sub)


def audio_event(task_id: str, window: tuple) -> dict:
    """The `audio` event's data for `(sample_rate, Chunk)`."""
    rate, (item, start, audio) = window
    pcm = np.ascontiguousarray(audio, dtype="<f4")
    return {
        "task_id": task_id,
        "item": item,
        "start": start,
        "samples": pcm.shape[0],
        "sample_rate": rate,
        "channels": pcm.shape[1],
        "encoding": ENCODING,
        "pcm": base64.b64encode(pcm.tobytes()).decode("ascii"),
    }


class _Published:
    """`stream` as `save_stream` reads it, each window published on the way; `ended()` once the last is out."""

    def __init__(self, stream, windows: Windows, ended):
        self._stream, self._windows, self._ended = stream, windows, ended

    @property
    def info(self):
        return self._stream.info

    @property
    def result(self):
        return self._stream.result

    def __iter__(self):
        rate = self.info.sample_rate
        for chunk in self._stream:
            self._windows.publish((rate, chunk))
            yield chunk
        self._ended()

    def close(self) -> None:
        self._stream.close()


def stream_job(pipe, job, path: Path, progress):
    """Run `job` through `generate_stream`, its windows published and its items saved as `result.save(path)` saves
    them (same names, same bytes); returns the run's result (its `audio` empty)."""
    from ..audio_stream import save_stream
    from ..pipeline import item_paths

    stream = pipe.generate_stream(job.request, callback=progress)
    try:
        paths = item_paths(path, len(stream.info.seeds))
        published = _Published(stream, job.windows, lambda: job.advance("saving"))
        job.files = save_stream(published, paths, job.subtype)
    except OSError as e:
        raise AceStepError(f"could not write {path.parent}: {first_line(e)}; nothing was written") from None
    finally:
        stream.close()
    return stream.result
