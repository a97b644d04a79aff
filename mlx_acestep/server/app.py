"""`make_app(pipe)`: the reference's REST routes (the subset clients use) over one pipeline, on FastAPI.

FastAPI + uvicorn because the reference serves the same protocol with them (so request parsing, status codes
and error bodies behave as clients expect) and both are small, well-kept ASGI pieces (the `server` extra).
"""

from pathlib import Path

from .adapters import AdapterRegistry
from .body import MIB, Limits
from .config import ServerConfig
from .events import event_routes
from .http import Gate, InputFolder
from .jobs import JobRunner
from .protocol import ProtocolError, envelope
from .routes import Server, info_routes, lora_routes, task_entry, task_routes
from .songwriter import songwriter_routes


def make_app(pipe, output_dir=None, *, config: ServerConfig | None = None, **settings):
    """The ASGI app, with `config` or its fields as keywords (`api_key`, `queue_size`, `keep_hours`, `input_dir`: the
    one folder whose files requests may name as source / reference audio, `max_request_mb`, `max_upload_mb`); bad
    settings are refused here. `app.state.runner` is its jobs' runner (what an orderly stop drains)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    if config is None:
        config = ServerConfig(output_dir, **settings)
    elif output_dir is not None or settings:
        raise TypeError("make_app: give config= or its fields as keywords, not both")
    output_dir = Path(config.output_dir).expanduser().resolve()
    inputs = InputFolder(Path(config.input_dir).expanduser().resolve() if config.input_dir else None)
    runner = JobRunner(pipe, output_dir, config.queue_size, config.keep_hours)
    server = Server(pipe, runner, AdapterRegistry(), Gate(config.api_key), inputs, output_dir)
    app = FastAPI(title="mlx-acestep", docs_url=None, redoc_url=None)
    app.state.gate, app.state.runner = server.gate, runner  # read_body checks the key before it reads
    app.state.limits = Limits(int(config.max_request_mb * MIB), int(config.max_upload_mb * MIB))

    def fail(message: str, status: int = 400):
        return JSONResponse(envelope(error=message, code=status), status_code=status)

    @app.exception_handler(ProtocolError)
    async def protocol_error(_, exc: ProtocolError):
        return fail(str(exc), exc.status)

    for add_routes in (task_routes, lora_routes, info_routes, songwriter_routes):
        add_routes(app, server)
    event_routes(app, server, lambda job: task_entry(job, server))
    app.add_api_route(
        "/v1/chat/completions", lambda: fail("not supported by this server (mlx-acestep serve)", 501), methods=["POST"]
    )
    return app
