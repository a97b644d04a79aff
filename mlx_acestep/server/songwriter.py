"""The planner's writing routes, as upstream's API serves them (`acestep/api/http/sample_format_routes.py`):
`/format_input`, `/v1/create_sample` and `/create_random_sample` (a task's `sample_mode` and `use_format`:
`sample_mode.py`).

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

from .protocol import ALIASES, NESTED, ProtocolError, as_bool, as_float, as_int, envelope, lookup
from .schema import OBJECT, TEXT, named, request_body

# What /format_input reads: its texts, and the metadata under every alias a task reads it by (lookup).
METAS = ("bpm", "audio_duration", "key_scale", "time_signature", "vocal_language")
FORMAT = request_body(
    named("prompt", "lyrics", "ai_token", schema=TEXT)
    | named("temperature", *(a for m in METAS for a in ALIASES[m]))
    | named(*NESTED, schema=OBJECT)  # lookup() reads the metadata nested under these too (the DAW's param_obj)
)
SAMPLE = request_body(named("query", "vocal_language", "ai_token", schema=TEXT) | named("instrumental", "temperature"))
RANDOM = request_body(named("sample_type", "ai_token", schema=TEXT))


def _planner(pipe, what: str):
    """`pipe`, which must have a planner LM."""
    if pipe.folders.lm is None:
        raise ProtocolError(f"{what} needs the planner LM, and this server runs without one (serve --lm 1.7B)", 503)
    return pipe


def songwriter_routes(app, server) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from ..errors import AceStepError
    from .http import read_body

    gate = server.gate  # the pipeline is read at each call: /v1/init may change the default or its planner

    async def write(call):
        """(the sheet, None) or (None, why not): on a thread of the pool, as the pipeline's own thread may be busy
        with a job and the event loop must go on."""
        try:
            return await run_in_threadpool(call), None
        except AceStepError as e:  # upstream: the envelope with code 500, HTTP 200
            return None, str(e)

    @app.post("/format_input", openapi_extra=FORMAT)
    async def format_input(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        pipe = _planner(server.pipe, "/format_input")
        f, prompt, lyrics = lookup(body), str(body.get("prompt") or ""), str(body.get("lyrics") or "")
        bpm, duration = as_int(f.get("bpm")), as_float(f.get("audio_duration"))
        given = dict(  # as upstream: a bpm or duration of 0 or less is none
            bpm=bpm if bpm and bpm > 0 else None,
            duration=duration if duration and duration > 0 else None,
            key=str(f.get("key_scale") or "") or None,
            time_signature=str(f.get("time_signature") or "") or None,
            language=str(f.get("vocal_language") or "") or None,
        )
        temperature = as_float(body.get("temperature"))
        sheet, error = await write(lambda: pipe.format_sample(prompt, lyrics, temperature=temperature, **given))
        if error is not None:
            return envelope(None, f"format_sample failed: {error}", 500)
        data = {
            "caption": sheet.caption or prompt,
            "lyrics": sheet.lyrics or lyrics,
            "bpm": sheet.bpm or given["bpm"],
            "key_scale": sheet.keyscale or given["key"] or "",
            "time_signature": sheet.timesignature or given["time_signature"] or "",
            "duration": sheet.duration or given["duration"],
            "vocal_language": sheet.language or given["language"] or "unknown",
        }
        return envelope(data)

    @app.post("/v1/create_sample", openapi_extra=SAMPLE)
    async def create_sample(request: Request):
        body, _ = await read_body(request)
        gate.check(request, body)
        pipe = _planner(server.pipe, "/v1/create_sample")
        language = str(body.get("vocal_language") or "unknown")
        sheet, error = await write(
            lambda: pipe.create_sample(
                str(body.get("query") or ""),
                instrumental=as_bool(body.get("instrumental"), False),
                language=language,
                temperature=as_float(body.get("temperature")) or None,
            )
        )
        if error is not None:
            return envelope(None, error, 500)
        return envelope(_sample(sheet, language))

    @app.post("/create_random_sample", openapi_extra=RANDOM)
    async def create_random_sample(request: Request):
        """Upstream returns one of its canned examples; this server has none, so the planner invents one (the
        keys are the example files')."""
        body, _ = await read_body(request)
        gate.check(request, body)
        pipe = _planner(server.pipe, "/create_random_sample")
        sheet, error = await write(lambda: pipe.create_sample(""))
        if error is not None:
            return envelope(None, error, 500)
        if (body.get("sample_type") or "simple_mode") == "simple_mode":
            return envelope(
                {"description": sheet.caption, "instrumental": False, "vocal_language": sheet.language or "unknown"}
            )
        data = {k: v for k, v in _sample(sheet, "unknown").items() if k != "vocal_language"}
        return envelope({"think": True, **data, "language": sheet.language or "unknown"})


def _sample(sheet, language: str) -> dict:
    """A sheet as upstream's /v1/create_sample answers it."""
    return {
        "caption": sheet.caption or "",
        "lyrics": sheet.lyrics or "",
        "bpm": sheet.bpm,
        "keyscale": sheet.keyscale or "",
        "duration": sheet.duration,
        "timesignature": sheet.timesignature or "",
        "vocal_language": sheet.language or language,
    }
