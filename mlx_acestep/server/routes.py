"""The routes, in three groups over one `Server`: tasks (the reference's protocol), adapters (an extension) and
what a client asks about the server.

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .adapters import AdapterRegistry
from .http import Gate, InputFolder, read_body
from .jobs import STATUS_CODE, SUCCEEDED, Job, JobRunner, QueueFull
from .protocol import REST_NAMES, ProtocolError, check_model, envelope, input_paths, request_fields

MEDIA = {".wav": "audio/wav", ".flac": "audio/flac"}


@dataclass
class Server:
    pipe: object  # the ACEStep pipeline
    runner: JobRunner
    registry: AdapterRegistry
    gate: Gate
    inputs: InputFolder
    output_dir: Path


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
                "generation_info": f"{job.seconds:.1f} s on mlx-acestep",
            }
        )
    return out


def task_entry(job: Job, server: Server) -> dict:
    """A job's entry in /query_result's answer (and in its events, server/events.py)."""
    return {
        "task_id": job.id,
        "status": STATUS_CODE[job.state],
        "result": json.dumps(result_items(job, server.pipe)),
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
    registrations never reach it."""
    from ..errors import AceStepError, FieldError
    from ..pipeline.request import GenerationRequest

    pipe = server.pipe
    check_model(body, pipe.name)
    adapters = server.registry.for_task(body)
    files = dict(uploads)
    for name, path in input_paths(body).items():
        if name not in files:
            files[name] = server.inputs.allowed(path, name)
    fields, fmt = request_fields(body, pipe.family, files)
    # confined again now: a registered file may have been replaced by a link leading out of the folder since
    fields["loras"] = [(str(server.inputs.allowed(a.path, "the adapter", folders=True)), a.scale) for a in adapters]
    try:
        generation = GenerationRequest(**fields)
        pipe.check(generation)
    except FieldError as e:  # named as the client sent it (audio_duration, not duration)
        raise ProtocolError(e.render(REST_NAMES)) from None
    except AceStepError as e:
        raise ProtocolError(str(e)) from None
    job = Job(generation, fmt, uploads=list(uploads.values()), adapters=[(a.name, a.scale) for a in adapters])
    try:
        return job, server.runner.submit(job)
    except QueueFull:
        raise ProtocolError("Server busy: queue is full", 429) from None


def task_routes(app, server: Server) -> None:
    from fastapi import Request

    runner, gate = server.runner, server.gate

    @app.post("/release_task")
    async def release_task(request: Request):
        body, uploads = await read_body(request, keep_files=True)
        try:
            gate.check(request, body)
            job, position = submit(server, body, uploads)
        except BaseException:
            for tmp in uploads.values():
                tmp.unlink(missing_ok=True)
            raise
        return envelope({"task_id": job.id, "status": "queued", "queue_position": position})

    @app.post("/query_result")
    async def query_result(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        ids = body.get("task_id_list", [])
        if isinstance(ids, str):
            try:
                ids = json.loads(ids)
            except json.JSONDecodeError:
                ids = []
        data = []
        for task_id in ids if isinstance(ids, list) else []:
            job = runner.jobs.get(str(task_id))
            if job is None:
                data.append(unknown_task(task_id))
                continue
            data.append(task_entry(job, server) | {"task_id": task_id})  # the id as the client sent it
        return envelope(data)

    @app.post("/cancel_task")  # an extension: the reference has no cancel route
    async def cancel_task(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        return envelope({"task_id": body.get("task_id"), "cancelled": runner.cancel(str(body.get("task_id")))})


def _name(body: dict):
    """An adapter's name as our clients (`name`) or upstream's (`adapter_name`) send it."""
    return body.get("name") if body.get("name") is not None else body.get("adapter_name")


def lora_routes(app, server: Server) -> None:
    """Extensions (the reference's REST server has none): they name adapters from the allowed input folder in the
    server's registry, which tasks submitted later use (server/adapters.py); the pipeline's own adapters, and so the
    jobs already queued, never change."""
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from ..errors import AceStepError

    registry, gate = server.registry, server.gate

    @app.post("/v1/lora/load")
    async def lora_load(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        path = body.get("path") or body.get("lora_path")  # lora_path, adapter_name: upstream's lora_routes.py names
        if not path:
            raise ProtocolError("give path: an adapter file or folder inside the allowed input folder")
        target = server.inputs.allowed(str(path), "the adapter", folders=True)
        try:
            # read once here, so a file that does not fit this model is refused now, not in every job; on a thread
            # of the pool: the pipeline's own thread may be busy with a job, and the event loop must go on
            adapter = await run_in_threadpool(server.pipe.adapters.check, target, _name(body))
        except AceStepError as e:
            raise ProtocolError(str(e)) from None
        registry.register(adapter.name, str(target), body.get("scale", 1.0))
        return envelope({"name": adapter.name, "summary": adapter.summary(), "loaded": registry.listing()})

    @app.post("/v1/lora/scale")
    async def lora_scale(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        registry.set_scale(_name(body), body.get("scale"))
        return envelope({"loaded": registry.listing()})

    @app.post("/v1/lora/unload")
    async def lora_unload(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        registry.remove(_name(body))
        return envelope({"loaded": registry.listing()})


def info_routes(app, server: Server) -> None:
    from fastapi import HTTPException, Request
    from fastapi.responses import FileResponse

    pipe, gate = server.pipe, server.gate

    @app.get("/v1/audio")
    async def audio(request: Request, path: str):
        gate.check(request)
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(server.output_dir):
            raise HTTPException(403, "the path is outside the server's output folder")
        if not resolved.is_file() or resolved.suffix not in MEDIA:
            raise HTTPException(404, "Audio file not found")
        return FileResponse(resolved, media_type=MEDIA[resolved.suffix])

    @app.get("/v1/models")
    async def models():
        model = {
            "id": f"acestep/{pipe.name}",
            "name": f"ACE-Step {pipe.name}",
            "input_modalities": ["text", "audio"],
            "output_modalities": ["audio"],
        }
        return {"object": "list", "data": [model]}

    @app.get("/v1/stats")
    async def stats(request: Request):
        gate.check(request)
        return envelope(server.runner.stats())

    @app.get("/health")
    async def health():
        return envelope({"status": "ok", "service": "ACE-Step API (mlx-acestep)", "version": "1.0"})
