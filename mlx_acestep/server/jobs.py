"""The server's jobs: a bounded FIFO queue, one worker thread running them one at a time on the one pipeline,
per-job progress and cancel, results written atomically into the output folder, each job's record kept on disk
beside them (server/records.py), old results expired, and an orderly stop."""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .records import Echo, JobRecords
from .windows import Windows, stream_job

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
STATUS_CODE = {QUEUED: 0, RUNNING: 0, SUCCEEDED: 1, FAILED: 2, CANCELLED: 2}  # the protocol's ints (0: also unknown)
# Each phase's share of a job's one 0-1 progress figure, in the order the phases run (pipeline/acestep.py); a phase a
# job does not run is skipped, so the figure may jump, never go back. Rough shares of a turbo run with the planner.
PHASES = (
    ("write", 0.10),
    ("encode", 0.05),
    ("lm", 0.30),
    ("text", 0.02),
    ("condition", 0.03),
    ("dit", 0.35),
    ("vae", 0.13),
    ("saving", 0.02),
)
PHASE_START = {name: sum(share for _, share in PHASES[:i]) for i, (name, _) in enumerate(PHASES)}
PHASE_SHARE = dict(PHASES)


class QueueFull(Exception):
    pass


@dataclass
class Job:
    request: object  # a GenerationRequest (an Echo of it for a job read back from its record)
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
    stage: str = "queued"  # the phase running, or the state once finished
    progress: float = 0.0  # one figure across phases, never going back (PHASES)
    created: float = field(default_factory=time.time)
    files: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event)
    step: str = ""  # "5/8" of the running phase
    windows: Windows = field(default_factory=Windows)  # its decoded audio's subscribers (windows.py)

    def advance(self, phase: str, done: int = 0, total: int = 0) -> None:
        self.stage, self.step = phase, f"{done}/{total}" if total else ""
        if phase in PHASE_SHARE:
            figure = PHASE_START[phase] + PHASE_SHARE[phase] * (done / total if total else 0.0)
            self.progress = max(self.progress, round(min(figure, 1.0), 4))

    def finish(self, state: str, error: str | None = None, stage: str | None = None) -> None:
        self.error, self.stage = error, stage or state
        if state == SUCCEEDED:
            self.progress = 1.0
        self.state = state  # last: a poll that sees it finished sees the rest

    @property
    def progress_text(self) -> str:
        """The phase and the one figure for a client to show: "dit 5/8, 62%", "cancelled", "interrupted"."""
        if self.state in FINISHED:
            return self.stage
        return f"{self.stage} {self.step}, {self.progress:.0%}" if self.step else f"{self.stage}, {self.progress:.0%}"

    @classmethod
    def from_record(cls, record: dict, output_dir: Path) -> Job:
        """A job read back; one that was queued or running when the server stopped is recorded as interrupted."""
        files = [Path(p) for p in record.get("files", [])]
        job = cls(
            Echo(record.get("request") or {}),
            record.get("audio_format", "flac"),
            subtype=record.get("subtype"),
            notes=list(record.get("notes") or []),  # what the client was told (a file sent and not used)
            answer=record.get("answer"),  # an analysis's result items
            adapters=[tuple(a) for a in record.get("adapters", [])],
            id=record["id"],
            created=float(record.get("created", 0.0)),
            files=[p for p in files if p.resolve().is_relative_to(output_dir)],  # never a file of anyone else
            seeds=record.get("seeds", []),
            metadata=record.get("metadata", []),
            seconds=float(record.get("seconds", 0.0)),
            progress=float(record.get("progress", 0.0)),
        )
        state = record.get("state")
        if state in FINISHED:
            job.finish(state, record.get("error"), record.get("stage"))
        else:
            was = "running" if state == RUNNING else "waiting"
            job.finish(
                FAILED, f"interrupted: the server stopped while this job was {was}; submit it again", "interrupted"
            )
        return job


class JobRunner:
    """Runs jobs on one pipeline from a bounded queue; every failure is recorded in its job, never raised."""

    def __init__(self, pipe, output_dir: Path, maxsize: int = 16, keep_hours: float = 24.0, activate=None):
        """`activate(pipe)` is called before a job runs on it (the server frees the other DiTs there)."""
        self.pipe, self.output_dir, self.keep_seconds = pipe, Path(output_dir), keep_hours * 3600
        self.activate = activate or (lambda pipe: None)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.records = JobRecords(self.output_dir / "jobs")
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=maxsize)
        self.jobs: dict[str, Job] = {}
        for record in self.records.load():
            job = Job.from_record(record, self.output_dir.resolve())
            self.jobs[job.id] = job
            self.records.save(job)  # an interrupted one says so from now on
        self.running: Job | None = None
        self.durations: collections.deque[float] = collections.deque(maxlen=50)  # the recent ones, for stats
        self._lock = threading.Lock()
        self._expire()
        self._thread = threading.Thread(target=self._loop, name="mlx-acestep serve worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> int:
        """Enqueue; returns the 1-based position among waiting jobs, or raises QueueFull."""
        self.records.save(job)  # before the worker can see it: its own saves come after this one
        with self._lock:
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                self.records.forget(job.id)
                raise QueueFull from None
            self.jobs[job.id] = job
            return self.queue.qsize()

    def position(self, job: Job) -> int:
        with self.queue.mutex:  # what guards the queue's own list
            waiting = list(self.queue.queue)
        return waiting.index(job) + 1 if job in waiting else 0

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state in FINISHED:
            return False
        with self._lock:  # against the worker starting it meanwhile (`_run` checks the flag under the same lock)
            job.cancel.set()
            waiting = job.state == QUEUED
            if waiting:  # says so now, not once the jobs before it are done (the worker then skips it)
                job.finish(CANCELLED, "cancelled before it started")
        if waiting:
            self._clean(job)  # its uploads and its record now
        return True

    def stats(self) -> dict:
        with self._lock:  # _expire pops jobs on the worker's thread
            states = [j.state for j in self.jobs.values()]
        recent = list(self.durations)
        return {
            "jobs": {"total": len(states), **{s: states.count(s) for s in (QUEUED, RUNNING, *FINISHED)}},
            "queue_size": self.queue.qsize(),
            "queue_maxsize": self.queue.maxsize,
            "avg_job_seconds": round(sum(recent) / len(recent), 3) if recent else 5.0,
        }

    def drop_waiting(self, reason: str) -> int:
        """Take every waiting job off the queue, recorded as cancelled with `reason`, its uploads deleted."""
        dropped = 0
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return dropped
            if job is not None:
                job.finish(CANCELLED, reason)
                self._clean(job)
                dropped += 1
            self.queue.task_done()

    def close(self) -> threading.Thread:
        """No job after the ones queued: the worker ends once they are done (join the returned thread)."""
        self.queue.put(None)
        return self._thread

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            try:
                self.running = job
                self._run(job)
            finally:
                self.running = None
                self._clean(job)
                self.queue.task_done()
                self._expire()

    def _clean(self, job: Job) -> None:
        for upload in job.uploads:
            upload.unlink(missing_ok=True)
        if job.id in self.jobs:  # one deleted meanwhile (a cancelled one waiting its turn) is not recorded again
            self.records.save(job)

    def _run(self, job: Job) -> None:
        from ..errors import AceStepError
        from ..pipeline import Cancelled

        with self._lock:  # a cancel either lands before this (the job is skipped) or finds it running
            if job.cancel.is_set():
                if job.state not in FINISHED:
                    job.finish(CANCELLED, "cancelled before it started")
                return
            job.state, job.stage = RUNNING, "running"
        self.records.save(job)
        start = time.perf_counter()
        try:
            self._generate(job)
            job.seconds = time.perf_counter() - start  # before the state: a poll that sees it done sees its time
            job.finish(SUCCEEDED)
        except Cancelled:
            job.finish(CANCELLED, f"cancelled during {job.stage} {job.step}".rstrip())
        except AceStepError as e:
            job.finish(FAILED, str(e))
        except Exception as e:  # a job must never take the server down: record it
            job.finish(FAILED, f"internal error: {e.__class__.__name__}: {e}")
        finally:
            job.seconds = time.perf_counter() - start
            self.durations.append(job.seconds)

    def _generate(self, job: Job) -> None:
        from ..files import write_text
        from ..pipeline import streamable

        pipe = job.pipe or self.pipe  # the DiT the task names or needs (server/models.py)
        self.activate(pipe)
        if job.work is not None:  # an analysis (analysis.py): its answer instead of songs
            job.answer = job.work.run(pipe, lambda p: _progress(job, p))
            return
        path, progress = self.output_dir / f"{job.id}.{job.audio_format}", lambda p: _progress(job, p)
        if streamable(job.request):  # its windows to the events' audio subscribers, its files the same bytes
            result = stream_job(pipe, job, path, progress)
        else:
            result = pipe.generate(job.request, callback=progress)
            job.advance("saving")
            job.files = result.save(path, job.subtype)
        job.request = result.request or job.request  # with what the planner wrote (sample_mode, use_format)
        job.seeds, job.metadata = result.seeds, result.metadata
        for path, seed in zip(job.files, result.seeds):  # atomically, like the audio beside it
            sidecar = {"task_id": job.id, "seed": seed, "caption": job.request.caption, "loras": job.adapters}
            write_text(path.with_suffix(".json"), json.dumps(sidecar), overwrite=False)

    def _expire(self) -> None:
        """Forget finished jobs older than keep_hours and delete their files and records (only our jobs' own)."""
        now = time.time()
        with self._lock:
            expired = [j for j in self.jobs.values() if j.state in FINISHED and now - j.created > self.keep_seconds]
            for job in expired:
                self.jobs.pop(job.id, None)
        for job in expired:
            self._remove(job)

    def delete(self, job_id: str) -> str:
        """Forget a finished job now, its files and record deleted as an expired one's. Says what it found, under one
        lock: "deleted", "unknown" (never submitted, or expired), or "unfinished"."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state not in FINISHED:
                return "unknown" if job is None else "unfinished"
            del self.jobs[job_id]
        self._remove(job)
        return "deleted"

    def _remove(self, job: Job) -> None:
        """Only what the job wrote: its songs, their sidecars and its record (`files` are inside the output folder)."""
        for path in job.files:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
        self.records.forget(job.id)


def _progress(job: Job, p) -> bool:
    """The pipeline's progress callback for `job`: False (stop at this step) once it is cancelled."""
    job.advance(p.phase, p.done, p.total)
    return not job.cancel.is_set()
