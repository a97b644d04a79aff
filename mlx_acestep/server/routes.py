"""The routes over one `Server`: tasks (the reference's protocol) and what a client asks about the server (the
LoRA routes: lora_routes.py; the models: model_routes.py).

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

import json
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import BAD_JSON
from .adapters import FIELDS as ADAPTER_FIELDS
from .adapters import AdapterRegistry
from .analysis import analysis_job
from .body import UPLOAD_FIELDS
from .http import Gate, InputFolder, read_body
from .jobs import STATUS_CODE, SUCCEEDED, Job, JobRunner, QueueFull
from .models import ServedModels
from .protocol import (
    ALIASES,
    NESTED,
    PATH_FIELDS,
    REST_NAMES,
    ProtocolError,
    envelope,
    input_paths,
    lookup,
    request_fields,
    task_name,
)
from .schema import OBJECT, TEXT, named, request_body

LOG = logging.getLogger("mlx_acestep.server")
MEDIA = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".opus": "audio/ogg"}  # audio_route.py:33


@dataclass
class Server:
    models: ServedModels
    runner: JobRunner
    registry: AdapterRegistry
    gate: Gate
    inputs: InputFolder
    output_dir: Path

    @property
    def pipe(self):
        """The default DiT's pipeline (what a task naming no model runs)."""
        return self.models.pipe


def result_items(job: Job, pipe) -> list[dict]:
    """A task's result as the reference's /query_result writes it, one entry per song."""
    base = {
        "wave": "",
        "status": STATUS_CODE[job.state],
        "create_time": int(job.created),
        "env": "development",
        "progress": job.progress,
        "stage": job.stage,
    }
    if job.state != SUCCEEDED:
        return [base | {"file": "", "error": job.error}]
    if job.answer is not None:  # an analysis: upstream lists its codes / descriptions as they are
        return [item if "status_message" in item else base | item for item in job.answer]
    req, out = job.request, []
    for i, path in enumerate(job.files):
        meta = job.metadata[i] if i < len(job.metadata) else {}
        metas = {
            "bpm": meta.get("bpm") or req.bpm or "N/A",
            "duration": meta.get("duration") or req.duration or "N/A",
            "genres": "N/A",
            "keyscale": meta.get("keyscale") or req.key or "N/A",
            "timesignature": meta.get("timesignature") or req.time_signature or "N/A",
            "prompt": req.caption,
            "lyrics": req.lyrics,
        }
        out.append(
            base
            | {
                "file": "/v1/audio?path=" + urllib.parse.quote(str(path), safe=""),
                "prompt": req.caption,
                "lyrics": req.lyrics,
                "metas": metas,
                "seed_value": str(job.seeds[i]),
                "dit_model": pipe.name,
                "loras": job.adapters,  # an extension: the named adapters it was submitted with
                "lm_model": pipe.folders.lm.name if pipe.folders.lm else "",
                "generation_info": "\n".join([f"{job.seconds:.1f} s on mlx-acestep", *job.notes]),
            }
        )
    return out


def task_entry(job: Job, server: Server) -> dict:
    """A job's entry in /query_result's answer (and in its events, server/events.py)."""
    return {
        "task_id": job.id,
        "status": STATUS_CODE[job.state],
        "result": json.dumps(result_items(job, job.pipe or server.pipe)),
        "progress_text": job.progress_text,
        "queue_position": server.runner.position(job),
    }


def unknown_task(task_id) -> dict:
    """An id this server never gave, or whose job expired: failed (2), saying so. The reference answers 0, still
    running (api/http/query_result_service.py:195), and its clients poll such an id until they time out."""
    error = "unknown task: not submitted to this server, or its result expired (--keep-hours)"
    item = {"file": "", "wave": "", "status": 2, "create_time": 0, "env": "development", "progress": 0.0}
    item |= {"stage": "unknown", "error": error}
    return {"task_id": task_id, "status": 2, "result": json.dumps([item]), "progress_text": "unknown task"}


def submit(server: Server, body: dict, uploads: dict) -> tuple[Job, int]:
    """A /release_task body -> (the queued job, its place in the queue); its adapters are fixed now: later
    registrations never reach it. Any field's refusal is a 4xx naming it as the client sent it (audio_duration, not
    duration), wherever it is read: the task's name and analysis fields are read before the request is built."""
    from ..errors import AceStepError, FieldError

    try:
        return _submit(server, body, uploads)
    except FieldError as e:
        raise ProtocolError(e.render(REST_NAMES)) from None
    except AceStepError as e:
        raise ProtocolError(str(e)) from None


def _submit(server: Server, body: dict, uploads: dict) -> tuple[Job, int]:
    from ..pipeline.request import GenerationRequest

    files = dict(uploads)
    for name, path in input_paths(body).items():
        if name not in files:
            files[name] = server.inputs.allowed(path, PATH_FIELDS[name])  # named as the client sends it
    notes = []
    f = lookup(body)
    pipe = server.models.pick(f.get("model"), task_name(f, files))
    work = analysis_job(f, files, pipe)
    if work is not None:
        return _queue(server, Job(None, "", uploads=list(uploads.values()), pipe=pipe, work=work))
    adapters = server.registry.for_task(body, pipe.name)
    fields, (suffix, subtype) = request_fields(body, pipe.family, files, notes)
    # confined again now: a registered file may have been replaced by a link leading out of the folder since
    fields["loras"] = [(str(server.inputs.allowed(a.path, "the adapter", folders=True)), a.scale) for a in adapters]
    generation = GenerationRequest(**fields)
    pipe.check(generation)
    named = [(a.name, a.scale) for a in adapters]
    job = Job(generation, suffix, uploads=list(uploads.values()), subtype=subtype, adapters=named, pipe=pipe)
    job.notes = notes + generation.notices()
    for note in job.notes:
        LOG.warning("task %s: %s", job.id, note)
    return _queue(server, job)


def _queue(server: Server, job: Job) -> tuple[Job, int]:
    try:
        return job, server.runner.submit(job)
    except QueueFull:
        raise ProtocolError("Server busy: queue is full", 429) from None


# Every alias a task's field is read under, its metadata objects, its adapters and its uploads (what submit reads).
TASK_BODY = request_body(
    named(*(a for aliases in ALIASES.values() for a in aliases), *ADAPTER_FIELDS, "ai_token")
    | named(*NESTED, schema=OBJECT),
    files=tuple(a for aliases in UPLOAD_FIELDS.values() for a in aliases),
)
TASK_IDS = request_body({"task_id_list": {"anyOf": [{"type": "array", "items": TEXT}, TEXT]}, "ai_token": TEXT})
ONE_TASK = request_body({"task_id": TEXT, "ai_token": TEXT})


def task_routes(app, server: Server) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    runner, gate = server.runner, server.gate

    @app.post("/release_task", openapi_extra=TASK_BODY)
    async def release_task(request: Request):
        body, uploads = await read_body(request, keep_files=True)
        try:
            gate.check(request, body)
            # on a thread of the pool: a task naming a DiT not yet loaded waits for it, and the event loop goes on
            job, position = await run_in_threadpool(submit, server, body, uploads)
        except BaseException:
            for tmp in uploads.values():
                tmp.unlink(missing_ok=True)
            raise
        return envelope({"task_id": job.id, "status": "queued", "queue_position": position})

    @app.post("/query_result", openapi_extra=TASK_IDS)
    async def query_result(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        ids = body.get("task_id_list", [])
        if isinstance(ids, str):
            try:
                ids = json.loads(ids)
            except BAD_JSON:
                ids = []
        data = []
        for task_id in ids if isinstance(ids, list) else []:
            job = runner.jobs.get(str(task_id))
            if job is None:
                data.append(unknown_task(task_id))
                continue
            data.append(task_entry(job, server) | {"task_id": task_id})  # the id as the client sent it
        return envelope(data)

    @app.post("/cancel_task", openapi_extra=ONE_TASK)  # an extension: the reference has no cancel route
    async def cancel_task(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        return envelope({"task_id": body.get("task_id"), "cancelled": runner.cancel(str(body.get("task_id")))})

    @app.post(
        "/delete_task", openapi_extra=ONE_TASK
    )  # an extension: a finished job's songs and record, deleted now instead of at --keep-hours
    async def delete_task(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        if body.get("task_id") is None:
            raise ProtocolError("give task_id: the task whose songs and record to delete")
        task_id = str(body["task_id"])
        found = runner.delete(task_id)
        if found == "unknown":
            raise ProtocolError(f"unknown task {task_id!r}: not submitted to this server, or expired", 404)
        if found == "unfinished":
            raise ProtocolError(f"task {task_id!r} has not finished: cancel it first", 409)
        return envelope({"task_id": task_id, "deleted": True})


def info_routes(app, server: Server) -> None:
    from fastapi import HTTPException, Request
    from fastapi.responses import FileResponse

    gate = server.gate

    @app.get("/v1/audio")
    async def audio(request: Request, path: str):
        gate.check(request)
        if "\x00" in path:  # no file has one; the OS refuses it (it was a 500)
            raise HTTPException(400, "path holds a NUL character")
        try:
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(server.output_dir):
                raise HTTPException(403, "the path is outside the server's output folder")
            found = resolved.is_file() and resolved.suffix in MEDIA
        except OSError:  # a name too long for the file system: no such file
            found = False
        if not found:
            raise HTTPException(404, "Audio file not found")
        return FileResponse(resolved, media_type=MEDIA[resolved.suffix])

    @app.get("/v1/stats")
    async def stats(request: Request):
        gate.check(request)
        return envelope(server.runner.stats())

    @app.get("/health")
    async def health():
        """With the models as upstream's /health names them (`api/http/model_service_routes.py:146-161`)."""
        lm = server.pipe.folders.lm
        return envelope(
            {
                "status": "ok",
                "service": "ACE-Step API (mlx-acestep)",
                "version": "1.0",
                "models_initialized": True,
                "llm_initialized": lm is not None,
                "loaded_model": server.models.default,
                "loaded_lm_model": lm.name if lm else None,
            }
        )
