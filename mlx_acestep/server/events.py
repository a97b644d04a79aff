"""An extension: `GET /v1/tasks/{task_id}/events`, a task's progress as Server-Sent Events, so a client watches
instead of polling `/query_result`. Each change is a `progress` event (the `/query_result` entry: status,
progress_text, queue_position, and the item's progress and stage); the last is a `result` event with the whole
entry once the job has finished, and the stream ends. With `?audio=true` the decoded audio comes too, an `audio`
event per window as the VAE decodes it (windows.py says what it holds and what is kept). The key as on every
route (the Authorization header, or `?ai_token=`, which a browser's EventSource can send where it cannot set a
header)."""

import asyncio
import json

from ..errors import RequestError
from .protocol import ProtocolError
from .values import flag
from .windows import audio_event

POLL_SECONDS = 0.2


def event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def event_routes(app, server, entry) -> None:
    """`entry(job)`: a job's `/query_result` entry (routes.py), the one shape both answer with."""
    from fastapi import Request
    from fastapi.responses import StreamingResponse

    from .jobs import FINISHED

    @app.get("/v1/tasks/{task_id}/events")
    async def task_events(request: Request, task_id: str):
        token = request.query_params.get("ai_token")
        server.gate.check(request, {"ai_token": token} if token else None)
        job = server.runner.jobs.get(task_id)
        if job is None:
            raise ProtocolError(f"unknown task {task_id!r}: not submitted to this server, or expired", 404)

        try:
            audio = flag(request.query_params.get("audio"), False, "audio")
        except RequestError as e:
            raise ProtocolError(str(e)) from None

        def windows(sub):
            for window in sub.drain() if sub else ():
                yield event("audio", audio_event(job.id, window))
            if sub and sub.lost:
                yield event("audio_lost", {"task_id": job.id, "reason": "the client fell behind the decoder"})
                sub.lost = False

        async def stream():
            sub = job.windows.subscribe() if audio and job.state not in FINISHED else None
            try:
                async for chunk in events(sub):
                    yield chunk
            finally:  # the client left or the job ended: no window is kept for it any more
                if sub is not None:
                    job.windows.unsubscribe(sub)

        async def events(sub):
            last = None
            while job.state not in FINISHED:
                for chunk in windows(sub):
                    yield chunk
                now = entry(job)
                item = json.loads(now["result"])[0]
                shown = {k: now[k] for k in ("task_id", "status", "progress_text", "queue_position")}
                shown |= {"progress": item["progress"], "stage": item["stage"]}
                if shown != last:
                    yield event("progress", shown)
                    last = shown
                await asyncio.sleep(POLL_SECONDS)
            for chunk in windows(sub):  # every window was published before the job finished
                yield chunk
            yield event("result", entry(job))

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy holds the events back
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
