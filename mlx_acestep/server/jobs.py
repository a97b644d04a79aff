"""The server's jobs: a bounded FIFO queue, one worker thread running them one at a time on the one pipeline,
per-job progress and cancel, results written atomically into the output folder, old results expired."""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATUS_CODE = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 1, FAILED: 2}  # the protocol's ints (0 also means unknown)


class QueueFull(Exception):
    pass


@dataclass
class Job:
    request: object  # a GenerationRequest
    audio_format: str  # the files' suffix
    uploads: list[Path] = field(default_factory=list)  # temp files deleted when the job ends
    subtype: str | None = None  # libsndfile's, where the format has more than one (wav32: FLOAT)
    notes: list[str] = field(default_factory=list)  # what the client may not expect (a sent file not used)
    adapters: list[tuple[str, float]] = field(default_factory=list)  # (name, scale) as submitted
    pipe: object = None  # the pipeline of the DiT it runs on (None: the runner's)
    work: object = None  # an analysis (analysis.py), run instead of a generation; `answer`: its result items
    answer: list | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = QUEUED
    stage: str = "queued"
    progress: float = 0.0
    created: float = field(default_factory=time.time)
    files: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """Runs jobs on one pipeline from a bounded queue; every failure is recorded in its job, never raised."""

    def __init__(self, pipe, output_dir: Path, maxsize: int = 16, keep_hours: float = 24.0, activate=None):
        """`activate(pipe)` is called before a job runs on it (the server frees the other DiTs there)."""
        self.pipe, self.output_dir, self.keep_seconds = pipe, Path(output_dir), keep_hours * 3600
        self.activate = activate or (lambda pipe: None)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=maxsize)
        self.jobs: dict[str, Job] = {}
        self.durations: collections.deque[float] = collections.deque(maxlen=50)  # the recent ones, for stats
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mlx-acestep serve worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> int:
        """Enqueue; returns the 1-based position among waiting jobs, or raises QueueFull."""
        with self._lock:
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                raise QueueFull from None
            self.jobs[job.id] = job
            return self.queue.qsize()

    def position(self, job: Job) -> int:
        with self.queue.mutex:  # what guards the queue's own list
            waiting = list(self.queue.queue)
        return waiting.index(job) + 1 if job in waiting else 0

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state in (SUCCEEDED, FAILED):
            return False
        job.cancel.set()
        return True

    def stats(self) -> dict:
        with self._lock:  # _expire pops jobs on the worker's thread
            states = [j.state for j in self.jobs.values()]
        recent = list(self.durations)
        return {
            "jobs": {"total": len(states), **{s: states.count(s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED)}},
            "queue_size": self.queue.qsize(),
            "queue_maxsize": self.queue.maxsize,
            "avg_job_seconds": round(sum(recent) / len(recent), 3) if recent else 5.0,
        }

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            try:
                self._run(job)
            finally:
                for upload in job.uploads:
                    upload.unlink(missing_ok=True)
                self.queue.task_done()
                self._expire()

    def _run(self, job: Job) -> None:
        from ..errors import AceStepError
        from ..files import write_text

        if job.cancel.is_set():
            job.state, job.stage, job.error = FAILED, FAILED, "cancelled before it started"
            return
        job.state, job.stage = RUNNING, "running"
        start = time.perf_counter()

        def progress(p):
            job.stage, job.progress = p.phase, round(p.done / p.total, 4) if p.total else 0.0
            return not job.cancel.is_set()

        try:
            pipe = job.pipe or self.pipe
            self.activate(pipe)
            if job.work is not None:
                job.answer = job.work.run(pipe, progress)
                job.state, job.stage, job.progress = SUCCEEDED, SUCCEEDED, 1.0
                return
            result = pipe.generate(job.request, callback=progress)
            job.request = result.request or job.request  # with what the planner wrote (sample_mode, use_format)
            job.stage = "saving"
            base = self.output_dir / job.id
            job.files = result.save(f"{base}.{job.audio_format}", job.subtype)
            job.seeds, job.metadata = result.seeds, result.metadata
            for path, seed in zip(job.files, result.seeds):  # atomically, like the audio beside it
                write_text(
                    path.with_suffix(".json"),
                    json.dumps(
                        {"task_id": job.id, "seed": seed, "caption": job.request.caption, "loras": job.adapters}
                    ),
                    overwrite=False,
                )
            job.seconds = time.perf_counter() - start  # before the state: a poll that sees it done sees its time
            job.state, job.stage, job.progress = SUCCEEDED, SUCCEEDED, 1.0
        except AceStepError as e:
            job.state, job.stage, job.error = FAILED, FAILED, str(e)
        except Exception as e:  # a job must never take the server down: record it
            job.state, job.stage, job.error = FAILED, FAILED, f"internal error: {e.__class__.__name__}: {e}"
        finally:
            job.seconds = time.perf_counter() - start
            self.durations.append(job.seconds)

    def _expire(self) -> None:
        """Forget finished jobs older than keep_hours and delete their files (only files of our own jobs)."""
        now = time.time()
        with self._lock:
            expired = [
                j for j in self.jobs.values() if j.state in (SUCCEEDED, FAILED) and now - j.created > self.keep_seconds
            ]
            for job in expired:
                self.jobs.pop(job.id, None)
        for job in expired:
            for path in job.files:
                path.unlink(missing_ok=True)
                path.with_suffix(".json").unlink(missing_ok=True)
