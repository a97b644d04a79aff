"""Upstream's OpenAI-style chat endpoint for agents and OpenRouter (`acestep/openrouter_adapter.py`, its request and
answer shapes in `acestep/openrouter_models.py`): `POST /v1/chat/completions` turns the last user message into a
task, runs it on the server's job queue like any /release_task, and answers with the songs as data URLs (or streams
upstream's chunks); `GET /v1/models` and `/api/v1/models` (the hosted service's path, which upstream's
`openrouter/client_test.py` calls) list the served DiTs.

No `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at definition time.
"""

import asyncio
import base64
import binascii
import json
import os
import re
import tempfile
import time
from pathlib import Path

from .body import UPLOAD_PREFIX
from .http import read_body
from .jobs import FAILED, SUCCEEDED, Job
from .models import ID_PREFIX
from .protocol import ProtocolError, flag
from .routes import MEDIA, Server, result_items, submit
from .schema import TEXT, named, request_body

ROLES = ("system", "user", "assistant")
# The tasks whose first sent audio is the source (the others take it as the reference): openrouter_adapter.py:740-750
SOURCE_TASKS = ("cover", "cover-nofsq", "repaint", "lego", "extract", "complete")
LYRICS_MARKS = ("[verse", "[chorus", "[bridge", "[intro", "[outro", "[hook", "[pre-chorus", "[refrain", "[inst")
HEARTBEAT_SECONDS = 2.0  # a "." chunk while the job runs (openrouter_adapter.py:521-525)
NO_TEXT = "No valid prompt, lyrics, sample query, or input audio found in request"  # openrouter_adapter.py:701-707
# An audio_config field -> the task field it sets (openrouter_adapter.py:370-374, 411), so an error names the former.
AUDIO_CONFIG = {
    "duration": "audio_duration",
    "bpm": "bpm",
    "key_scale": "key_scale",
    "time_signature": "time_signature",
    "vocal_language": "vocal_language",
    "format": "audio_format",
}
# Upstream's request model's bounds for the OpenAI sampling fields (openrouter_models.py:76-79).
BOUNDS = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "top_k": (0.0, None), "max_tokens": (1.0, None)}
# The task fields a chat request sends under their own names, with upstream's chat defaults, which are not the REST
# ones (openrouter_adapter.py:321-413); and those passed on only when sent.
CHAT_DEFAULTS = {
    "lm_cfg_scale": 2.0,
    "thinking": False,
    "inference_steps": 8,
    "infer_method": "ode",
    "guidance_scale": 7.0,
    "batch_size": 1,
    "task_type": "text2music",
    "repainting_start": 0.0,
    "audio_cover_strength": 1.0,
    "use_format": False,
}
PASSED = ("audio_codes", "cover_noise_strength")
MESSAGE = {"properties": {"role": {"enum": list(ROLES)}, "content": {"anyOf": [TEXT, {"type": "array"}]}}}
CHAT = named(*BOUNDS, *CHAT_DEFAULTS, *PASSED, "lyrics", "sample_mode", "seed", "repainting_end", "model", "stream")
CHAT |= {"messages": {"type": "array", "items": MESSAGE | {"required": ["role", "content"]}}, "ai_token": TEXT}
CHAT = request_body(
    CHAT | {"audio_config": {"properties": named(*AUDIO_CONFIG, "instrumental")}}, required=("messages",)
)


def generation_timeout() -> int:
    """How long a non-streaming call waits for its songs (upstream's variable and default, openrouter_adapter.py:46)."""
    value = os.environ.get("ACESTEP_GENERATION_TIMEOUT", "600")
    try:
        return int(value)
    except ValueError:
        raise ProtocolError(
            f"ACESTEP_GENERATION_TIMEOUT must be a whole number of seconds, got {value!r}", 500
        ) from None


def split_text(content: str) -> tuple[str, str]:
    """(caption, lyrics) of a message's text: its <prompt> / <lyrics> tags, else lyrics if it reads as lyrics (a
    section mark, or four or more short lines), else the caption (openrouter_adapter.py:179-223, 300-315)."""
    found = {}
    rest = content
    for tag in ("prompt", "lyrics"):
        match = re.search(rf"<{tag}>(.*?)</{tag}>", content, re.DOTALL | re.IGNORECASE)
        if match:
            found[tag] = match.group(1).strip()
            rest = rest.replace(match.group(0), "").strip()
    if found:
        return found.get("prompt") or rest, found.get("lyrics", "")
    lines = [line.strip() for line in content.split("\n") if line.strip()]
    short_lines = len(lines) >= 4 and sum(map(len, lines)) / len(lines) < 60
    if short_lines or any(mark in content.lower() for mark in LYRICS_MARKS):
        return "", content
    return content, ""


def read_messages(messages) -> tuple[str, str, list[tuple[str, str, str]]]:
    """(caption, lyrics, [(where, base64 data, format)]) of the last user message with content; the others are not
    read, as upstream (openrouter_adapter.py:236-318)."""
    if not isinstance(messages, list):
        raise ProtocolError("messages must be a list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ProtocolError(f"messages[{i}].role must be one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), (str, list)):
            raise ProtocolError(f"messages[{i}].content must be a text or a list of content parts")
    for i in reversed(range(len(messages))):
        content = messages[i]["content"]
        if messages[i]["role"] != "user" or not content:
            continue
        audio = []
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text") or "").strip())
                elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
                    sent = part["input_audio"]
                    if sent.get("data"):
                        where = f"messages[{i}].content[{j}].input_audio"
                        audio.append((where, str(sent["data"]), str(sent.get("format") or "mp3")))
            content = "\n".join(texts)
        content = content.strip()
        return (*split_text(content), audio) if content else ("", "", audio)
    return "", "", []


def save_audio(where: str, data: str, fmt: str) -> Path:
    """A sent input_audio in a temporary file the job deletes when it ends; bad base64 is a 400 naming the part
    (upstream drops it silently: openrouter_adapter.py:161-166)."""
    try:
        raw = base64.b64decode(data.split(",", 1)[1] if "," in data else data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where}.data is not base64 audio") from None
    if not raw:
        raise ProtocolError(f"{where}.data is empty")
    suffix = "." + "".join(c for c in fmt if c.isalnum())[:8] if fmt else ""
    fd, tmp = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return Path(tmp)


def check_bounds(body: dict) -> None:
    for name, (low, high) in BOUNDS.items():
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{name} must be a number, got {value!r}")
        if value < low or (high is not None and value > high):
            raise ProtocolError(f"{name} must be at least {low:g}" + (f" and at most {high:g}" if high else ""))


def task_body(body: dict) -> tuple[dict, list]:
    """(the /release_task fields of a chat request, its sent audio), with upstream's chat defaults, which are not
    the REST ones (openrouter_adapter.py:321-413); the message's role follows openrouter_adapter.py:683-707."""
    check_bounds(body)
    config = body.get("audio_config") or {}
    if not isinstance(config, dict):
        raise ProtocolError("audio_config must be an object")
    caption, lyrics, audio = read_messages(body.get("messages"))
    query = ""
    sample_mode = _flag(body.get("sample_mode"), "sample_mode")
    if body.get("lyrics") or sample_mode:
        if body.get("lyrics"):
            lyrics = str(body["lyrics"])
        else:
            caption, lyrics, query = "", "", caption
    if not (caption or lyrics or query or sample_mode or audio):
        raise ProtocolError(NO_TEXT)
    if _flag(config.get("instrumental"), "audio_config.instrumental") and not lyrics:
        lyrics = "[inst]"
    seed = body.get("seed")
    task = {name: _given(body.get(name), default) for name, default in CHAT_DEFAULTS.items()} | {
        "prompt": caption,
        "lyrics": lyrics,
        "sample_mode": sample_mode,
        "sample_query": query,
        "vocal_language": config.get("vocal_language") or "en",
        "audio_format": config.get("format") or "mp3",
        "lm_temperature": _given(body.get("temperature"), 0.85),
        "lm_top_p": _given(body.get("top_p"), 0.9),
        "lm_top_k": _given(body.get("top_k"), 0),
        "seed": _given(seed, -1),
        "use_random_seed": seed is None,
        "repainting_end": body.get("repainting_end"),
    }
    task |= {field: config[name] for name, field in AUDIO_CONFIG.items() if config.get(name) not in (None, "")}
    task |= {name: body[name] for name in PASSED if body.get(name) not in (None, "")}
    return task, audio


def _flag(value, name: str) -> bool:
    from ..errors import FieldError

    try:
        return flag(value, False, name)
    except FieldError as e:
        raise ProtocolError(str(e)) from None


def _given(value, default):
    return default if value is None else value


# A task field -> the chat request's name for it, so an error names what the client wrote.
CHAT_NAMES = {field: f"audio_config.{name}" for name, field in AUDIO_CONFIG.items()} | {
    "lm_temperature": "temperature",
    "lm_top_p": "top_p",
    "lm_top_k": "top_k",
    "audio_code_string": "audio_codes",
}


def _renamed(message: str) -> str:
    for field, name in CHAT_NAMES.items():
        if message.startswith(field + " "):
            return name + message[len(field) :]
    return message


def start(server: Server, body: dict) -> Job:
    """The chat request's job, queued; its sent audio goes to the source or reference as upstream routes it, and a
    model this server does not have runs on the default DiT, as upstream (job_model_selection.py:53-60)."""
    task, audio = task_body(body)
    model = str(body.get("model") or "").strip()
    if model:
        name = model.split("/", 1)[1] if "/" in model else model  # openrouter_adapter.py:63-67
        try:
            server.models.pick(name, task["task_type"])
            task["model"] = name
        except ProtocolError as e:
            if e.status != 400:
                raise
    roles = ["src_audio", "ref_audio"] if task["task_type"] in SOURCE_TASKS else ["ref_audio"]
    uploads = {}
    try:
        for role, (where, data, fmt) in zip(roles, audio):
            uploads[role] = save_audio(where, data, fmt)
        job, _ = submit(server, task, uploads)
    except ProtocolError as e:
        for path in uploads.values():
            path.unlink(missing_ok=True)
        raise ProtocolError(_renamed(str(e)), e.status) from None
    except BaseException:
        for path in uploads.values():
            path.unlink(missing_ok=True)
        raise
    if len(audio) > len(roles):
        job.notes.append(f"{len(audio) - len(roles)} of the sent audio parts were not used")
    return job


def describe(item: dict) -> str:
    """The answer's text: the song's metadata and lyrics in upstream's markdown (openrouter_adapter.py:92-123)."""
    metas, lines = item.get("metas", {}), []
    caption = metas.get("prompt") or item.get("prompt", "")
    if caption:
        lines.append(f"**Caption:** {caption}")
    for key, label, unit in (
        ("bpm", "BPM", ""),
        ("duration", "Duration", "s"),
        ("keyscale", "Key", ""),
        ("timesignature", "Time Signature", ""),
    ):
        if metas.get(key) and metas[key] != "N/A":
            lines.append(f"**{label}:** {metas[key]}{unit}")
    parts = ["## Metadata\n" + "\n".join(lines)] if lines else []
    lyrics = item.get("lyrics") or ""
    if lyrics.strip() and lyrics.strip().lower() not in ("[inst]", "[instrumental]"):
        parts.append(f"## Lyrics\n{lyrics}")
    return "\n\n".join(parts) or "Music generated successfully."


def audio_urls(job: Job) -> list[dict]:
    """Every song of the job as upstream's audio item, a base64 data URL (openrouter_adapter.py:70-89, 430-441;
    upstream sends the first song only: here a batch sends them all, in order)."""
    out = []
    for path in job.files:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out.append({"type": "audio_url", "audio_url": {"url": f"data:{MEDIA[path.suffix]};base64,{data}"}})
    return out


def _done(job: Job) -> bool:
    return job.state in (SUCCEEDED, FAILED)


async def _until_done(job: Job, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not _done(job) and time.monotonic() < end:
        await asyncio.sleep(0.1)


def _chunk(ids: dict, finish=None, **delta) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f"data: {json.dumps(ids | {'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"


async def stream(job: Job, ids: dict, pipe):
    """Upstream's SSE sequence (openrouter_adapter.py:473-568): the role, a "." every 2 s while the job runs, the
    text, the audio, `stop` (or the error and `error`), `[DONE]`. A client that goes away cancels its job."""
    try:
        yield _chunk(ids, role="assistant", content="")
        while not _done(job):
            await _until_done(job, HEARTBEAT_SECONDS)
            if not _done(job):
                yield _chunk(ids, content=".")
        if job.state == FAILED:
            yield _chunk(ids, content=f"\n\nError: {job.error or 'Generation failed'}")
            yield _chunk(ids, finish="error")
        else:
            yield _chunk(ids, content="\n\n" + describe(result_items(job, pipe)[0]))
            yield _chunk(ids, audio=audio_urls(job))
            yield _chunk(ids, finish="stop")
        yield "data: [DONE]\n\n"
    finally:
        if not _done(job):
            job.cancel.set()


def answer(job: Job, ids: dict, pipe) -> dict:
    """Upstream's non-streaming answer (openrouter_adapter.py:416-470); a failed job is its 500."""
    if job.state != SUCCEEDED:
        raise ProtocolError(job.error or "Generation failed", 500)
    message = {"role": "assistant", "content": describe(result_items(job, pipe)[0])}
    message |= {"audio": audio_urls(job), "audio_codes": None}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return ids | {"object": "chat.completion", "choices": [choice], "usage": usage}


def model_list(server: Server) -> dict:
    """The served DiTs in upstream's OpenRouter shape (openrouter_adapter.py:594-651, openrouter_models.py:197-236):
    the default first, then the others built."""
    names = [server.models.default] + [n for n in server.models.loaded() if n != server.models.default]
    created = int(time.time()) - 86400 * 30  # upstream's placeholder date
    pricing = {"prompt": "0", "completion": "0", "request": "0", "image": "0"}
    data = [
        {
            "id": ID_PREFIX + name,
            "name": f"ACE-Step {name}",
            "created": created,
            "input_modalities": ["text", "audio"],
            "output_modalities": ["audio", "text"],
            "context_length": 4096,
            "max_output_length": 300,
            "pricing": pricing,
            "description": "AI music generation model",
            "architecture": None,
        }
        for name in names
    ]
    return {"object": "list", "data": data}


def chat_routes(app, server: Server) -> None:
    from fastapi import Request
    from fastapi.responses import StreamingResponse
    from starlette.concurrency import run_in_threadpool

    @app.get("/v1/models")
    @app.get("/api/v1/models")
    async def models():
        return model_list(server)

    @app.post("/v1/chat/completions", openapi_extra=CHAT)
    async def chat_completions(request: Request):
        body, _ = await read_body(request)
        server.gate.check(request, body)
        # on a thread of the pool: a task naming a DiT not yet loaded waits for it, and the event loop goes on
        job = await run_in_threadpool(start, server, body)
        pipe = job.pipe or server.pipe
        ids = {"id": f"chatcmpl-{os.urandom(8).hex()}", "created": int(time.time())}
        ids["model"] = str(body.get("model") or ID_PREFIX + pipe.name)
        if _flag(body.get("stream"), "stream"):
            return StreamingResponse(stream(job, ids, pipe), media_type="text/event-stream")
        timeout = generation_timeout()
        end = time.monotonic() + timeout
        while not _done(job):
            if await request.is_disconnected():
                job.cancel.set()
                raise ProtocolError("the client went away", 499)
            if time.monotonic() > end:
                job.cancel.set()
                raise ProtocolError("Generation timeout", 504)
            await _until_done(job, 1.0)
        return answer(job, ids, pipe)
