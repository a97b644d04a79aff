"""The jobs' records on disk (`OUTPUT/jobs/ID.json`, written atomically at each change of state), so that a client
polling across a restart gets its result, or a clear answer, never "running" forever.

A record holds what `/query_result` answers with (state, files, seeds, metadata, what the request asked for), not
the request itself: a job that was queued or running when the server stopped is not run again, it is recorded as
interrupted (its uploads are gone with the process's temporary files).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from ..errors import BAD_JSON

ECHOED = ("caption", "lyrics", "bpm", "duration", "key", "time_signature")  # what a result repeats of its request
SAVED = (
    "id",
    "audio_format",
    "subtype",
    "notes",
    "answer",  # an analysis's result items
    "adapters",
    "state",
    "stage",
    "progress",
    "created",
    "seeds",
    "metadata",
    "error",
)
SAVED += ("seconds",)


class Echo:
    """The part of a finished job's request its result repeats, as read back from a record (any other field: None)."""

    def __init__(self, fields: dict):
        self.__dict__.update(fields)

    def __getattr__(self, name):  # only called for what the record lacks
        return None


class JobRecords:
    """One JSON file per job in `folder` (created on first write); only files named by a job id are ever touched."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def save(self, job) -> bool:
        """Write `job`'s record; False when it cannot be written (a full disk): the job goes on without it, and a
        restart would answer 'unknown task' for it rather than stop the server now."""
        from ..files import write_text

        record = {name: getattr(job, name) for name in SAVED}
        record["files"] = [str(p) for p in job.files]
        record["request"] = {name: getattr(job.request, name, None) for name in ECHOED}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_text(self.path(job.id), json.dumps(record, default=str))
        except OSError:
            return False
        return True

    def forget(self, job_id: str) -> None:
        self.path(job_id).unlink(missing_ok=True)

    def load(self) -> list[dict]:
        """Every readable record; an unreadable one (cut short by a full disk, edited by hand) is skipped, and kept."""
        out = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else ():
            if not _is_job_id(path.stem):
                continue
            try:
                record = json.loads(path.read_text())
            except (OSError, *BAD_JSON):
                continue
            if isinstance(record, dict) and record.get("id") == path.stem:
                out.append(record)
        return out


def _is_job_id(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False
