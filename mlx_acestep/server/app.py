"""`make_app(pipe)`: the reference's REST routes (the subset clients use) over one pipeline, on FastAPI.

FastAPI + uvicorn because the reference serves the same protocol with them (so request parsing, status codes
and error bodies behave as clients expect) and both are small, well-kept ASGI pieces (the `server` extra).
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time

import json
import os
import shutil
import tempfile
import urllib.parse
from pathlib import Path

from .adapters import AdapterRegistry
from .config import ServerConfig
from .jobs import STATUS_CODE, SUCCEEDED, Job, JobRunner, QueueFull
from .protocol import ProtocolError, check_model, envelope, input_paths, request_fields

MEDIA = {".wav": "audio/wav", ".flac": "audio/flac"}
UPLOAD_FIELDS = {"src_audio": ("ctx_audio", "src_audio"), "ref_audio": ("ref_audio", "reference_audio")}


def make_app(pipe, output_dir=None, *, config: ServerConfig | None = None, **settings):
    """The ASGI app, with `config` or its fields as keywords (`api_key`, `queue_size`, `keep_hours`, `input_dir`: the
    one folder whose files requests may name as source / reference audio); bad settings are refused here."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    from ..errors import AceStepError
    from ..pipeline.request import GenerationRequest, RequestError

    if config is None:
        config = ServerConfig(output_dir, **settings)
    elif output_dir is not None or settings:
        raise TypeError("make_app: give config= or its fields as keywords, not both")
    api_key = config.api_key
    output_dir = Path(config.output_dir).expanduser().resolve()
    inputs_root = Path(config.input_dir).expanduser().resolve() if config.input_dir else None
    runner = JobRunner(pipe, output_dir, config.queue_size, config.keep_hours)
    registry = AdapterRegistry()
    app = FastAPI(title="mlx-acestep", docs_url=None, redoc_url=None)
    app.state.runner, app.state.adapters = runner, registry

    def fail(message: str, status: int = 400):
        return JSONResponse(envelope(error=message, code=status), status_code=status)

    def check_key(request: Request, body=None):
        if api_key is None:
            return
        token = (body or {}).get("ai_token")
        if token:
            if token != api_key:
                raise HTTPException(401, "Invalid ai_token")
            return
        header = request.headers.get("authorization")
        if header is None:
            raise HTTPException(
                401, "Missing ai_token or Authorization header" if body is not None else "Missing Authorization header"
            )
        if header.removeprefix("Bearer ") != api_key:
            raise HTTPException(401, "Invalid API key")

    async def read_body(request: Request, keep_files: bool = False):
        """(fields, uploaded files) of a JSON, urlencoded or multipart body; only `keep_files` routes (the one that
        takes audio) write uploads to temporary files, the others never leave any behind."""
        kind = request.headers.get("content-type", "").lower()
        if kind.startswith("multipart/form-data") or kind.startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            body, uploads = {}, {}
            for key, value in form.multi_items():
                if hasattr(value, "filename"):
                    for name, aliases in UPLOAD_FIELDS.items() if keep_files else ():
                        if key in aliases and value.filename and name not in uploads:
                            suffix = Path(value.filename).suffix[:8]
                            fd, tmp = tempfile.mkstemp(prefix="mlx-acestep-upload-", suffix=suffix)
                            with os.fdopen(fd, "wb") as f:
                                shutil.copyfileobj(value.file, f)
                            uploads[name] = Path(tmp)
                else:
                    body.setdefault(key, value)
            return body, uploads
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ProtocolError(
                "the body is not valid JSON (send Content-Type: application/json with a JSON object)"
            ) from None
        if not isinstance(body, dict):
            raise ProtocolError("the body must be a JSON object")
        return body, {}

    def allowed_input(path: str, what: str, folders: bool = False):
        if inputs_root is None:
            raise ProtocolError(
                f"{what} paths are not allowed here (start the server with --input-dir, or upload the file)", 403
            )
        resolved = Path(path).expanduser().resolve()
        if not resolved.is_relative_to(inputs_root):
            raise ProtocolError(f"{what} {path!r} is outside the allowed input folder", 403)
        if not (resolved.is_file() or (folders and resolved.is_dir())):
            raise ProtocolError(f"{what} {path!r} does not exist", 404)
        return resolved

    @app.exception_handler(ProtocolError)
    async def protocol_error(_, exc: ProtocolError):
        return fail(str(exc), exc.status)

    @app.post("/release_task")
    async def release_task(request: Request):
        body, uploads = await read_body(request, keep_files=True)
        try:
            check_key(request, body)
            check_model(body, pipe.name)
            adapters = registry.for_task(body)  # fixed now: later registrations never reach this job
            files = dict(uploads)
            for name, path in input_paths(body).items():
                if name not in files:
                    files[name] = allowed_input(path, name)
            fields, fmt = request_fields(body, pipe.family, files)
            fields["loras"] = [(a.path, a.scale) for a in adapters]
            try:
                generation = GenerationRequest(**fields)
                generation.check_model(pipe.family, pipe.name)
            except (RequestError, AceStepError) as e:
                raise ProtocolError(str(e)) from None
            job = Job(generation, fmt, uploads=list(uploads.values()), adapters=[(a.name, a.scale) for a in adapters])
            try:
                position = runner.submit(job)
            except QueueFull:
                raise ProtocolError("Server busy: queue is full", 429) from None
        except BaseException:
            for tmp in uploads.values():
                tmp.unlink(missing_ok=True)
            raise
        return envelope({"task_id": job.id, "status": "queued", "queue_position": position})

    def item(job: Job):
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
        req = job.request
        out = []
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

    @app.post("/query_result")
    async def query_result(request: Request):
        body, _ = await read_body(request)
        check_key(request, body)
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
                data.append({"task_id": task_id, "status": 0, "result": "[]"})
            else:
                data.append(
                    {
                        "task_id": task_id,
                        "status": STATUS_CODE[job.state],
                        "result": json.dumps(item(job)),
                        "progress_text": f"{job.stage} {job.progress:.0%}",
                        "queue_position": runner.position(job),
                    }
                )
        return envelope(data)

    @app.post("/cancel_task")  # an extension: the reference has no cancel route
    async def cancel_task(request: Request):
        body, _ = await read_body(request)
        check_key(request, body)
        return envelope({"task_id": body.get("task_id"), "cancelled": runner.cancel(str(body.get("task_id")))})

    # LoRA routes (extensions; the reference's REST server has none): they name adapters from the allowed input
    # folder in the server's registry, which tasks submitted later use (server/adapters.py); the pipeline's own
    # adapters, and so the jobs already queued, never change.
    @app.post("/v1/lora/load")
    async def lora_load(request: Request):
        body, _ = await read_body(request)
        check_key(request, body)
        if not body.get("path"):
            raise ProtocolError("give path: an adapter file or folder inside the allowed input folder")
        target = allowed_input(str(body["path"]), "the adapter", folders=True)
        try:
            # read once here, so a file that does not fit this model is refused now, not in every job; on a thread
            # of the pool: the pipeline's own thread may be busy with a job, and the event loop must go on
            adapter = await run_in_threadpool(pipe.adapters.check, target, body.get("name"))
        except AceStepError as e:
            raise ProtocolError(str(e)) from None
        registry.register(adapter.name, str(target), body.get("scale", 1.0))
        return envelope({"name": adapter.name, "summary": adapter.summary(), "loaded": registry.listing()})

    @app.post("/v1/lora/scale")
    async def lora_scale(request: Request):
        body, _ = await read_body(request)
        check_key(request, body)
        registry.set_scale(body.get("name"), body.get("scale"))
        return envelope({"loaded": registry.listing()})

    @app.post("/v1/lora/unload")
    async def lora_unload(request: Request):
        body, _ = await read_body(request)
        check_key(request, body)
        registry.remove(body.get("name"))
        return envelope({"loaded": registry.listing()})

    @app.get("/v1/audio")
    async def audio(request: Request, path: str):
        check_key(request)
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(output_dir):
            raise HTTPException(403, "the path is outside the server's output folder")
        if not resolved.is_file() or resolved.suffix not in MEDIA:
            raise HTTPException(404, "Audio file not found")
        return FileResponse(resolved, media_type=MEDIA[resolved.suffix])

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [
                {
                    "id": f"acestep/{pipe.name}",
                    "name": f"ACE-Step {pipe.name}",
                    "input_modalities": ["text", "audio"],
                    "output_modalities": ["audio"],
                }
            ],
        }

    @app.get("/v1/stats")
    async def stats(request: Request):
        check_key(request)
        return envelope(runner.stats())

    @app.get("/health")
    async def health():
        return envelope({"status": "ok", "service": "ACE-Step API (mlx-acestep)", "version": "1.0"})

    for path in ("/format_input", "/create_random_sample", "/v1/chat/completions"):
        app.add_api_route(path, lambda: fail("not supported by this server (mlx-acestep serve)", 501), methods=["POST"])
    return app
