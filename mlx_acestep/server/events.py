"""An extension: `GET /v1/tasks/{task_id}/events`, a task's progress as Server-Sent Events, so a client watches
instead of polling `/query_result`. Each change is a `progress` event (the `/query_result` entry: status,
progress_text, queue_position, and the item's progress and stage); the last is a `result` event with the whole
entry once the job has finished, and the stream ends. The key as on every route (the Authorization header, or
`?ai_token=`, which a browser's EventSource can send where it cannot set a header)."""

import asyncio
import json

from .protocol import ProtocolError

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

        async def stream():
            last = None
            while job.state not in FINISHED:
                now = entry(job)
                item = json.loads(now["result"])[0]
                shown = {k: now[k] for k in ("task_id", "status", "progress_text", "queue_position")}
                shown |= {"progress": item["progress"], "stage": item["stage"]}
                if shown != last:
                    yield event("progress", shown)
                    last = shown
                await asyncio.sleep(POLL_SECONDS)
            yield event("result", entry(job))

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy holds the events back
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
