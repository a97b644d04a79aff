"""`make_app(pipe)`: the reference's REST routes (the subset clients use) over one pipeline, on FastAPI.

FastAPI + uvicorn because the reference serves the same protocol with them (so request parsing, status codes
and error bodies behave as clients expect) and both are small, well-kept ASGI pieces (the `server` extra).
"""

from pathlib import Path

from .adapters import AdapterRegistry
from .body import MIB, Limits
from .chat import chat_routes
from .config import ServerConfig
from .events import event_routes
from .http import Gate, InputFolder
from .jobs import JobRunner
from .lora_routes import lora_routes
from .model_routes import model_routes
from .models import ServedModels
from .protocol import ProtocolError, error_body
from .routes import Server, info_routes, task_entry, task_routes
from .songwriter import songwriter_routes
from .studio import studio_routes


def make_app(pipe, output_dir=None, *, config: ServerConfig | None = None, source=None, **settings):
    """The ASGI app, with `config` or its fields as keywords (`api_key`, `queue_size`, `keep_hours`, `input_dirs`: the
    folders whose files requests may name as source / reference audio or adapters, `max_request_mb`,
    `max_upload_mb`); bad settings are refused here. `source`, the `ModelSource` `pipe` was loaded from, lets tasks
    run the source's other DiTs (without it, only `pipe`'s). `app.state.runner` is its jobs' runner (what an orderly
    stop drains)."""
    from fastapi import FastAPI
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    if config is None:
        config = ServerConfig(output_dir, **settings)
    elif output_dir is not None or settings:
        raise TypeError("make_app: give config= or its fields as keywords, not both")
    output_dir = Path(config.output_dir).expanduser().resolve()
    inputs = InputFolder(Path(folder).expanduser().resolve() for folder in config.input_dirs)
    models = ServedModels(pipe, source)
    runner = JobRunner(pipe, output_dir, config.queue_size, config.keep_hours, activate=models.activate)
    server = Server(models, runner, AdapterRegistry(), Gate(config.api_key), inputs, output_dir)
    app = FastAPI(title="mlx-acestep", docs_url=None, redoc_url=None)
    app.state.gate, app.state.runner = server.gate, runner  # read_body checks the key before it reads
    app.state.limits = Limits(int(config.max_request_mb * MIB), int(config.max_upload_mb * MIB))
    if config.cors_origins:  # opt-in: upstream's methods and headers (api/route_setup.py:62-68), the origins given
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", "Authorization"],
        )

    def fail(message: str, status: int = 400, detail=None, headers=None):
        return JSONResponse(error_body(message, status, detail), status_code=status, headers=headers)

    # Every error carries upstream's `detail` beside the envelope: ours, FastAPI's (401, 404 and 405 with its Allow
    # header, 422) and an unexpected one (500), so a client of either kind reads why.
    @app.exception_handler(ProtocolError)
    async def protocol_error(_, exc: ProtocolError):
        return fail(str(exc), exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(_, exc: HTTPException):
        return fail(str(exc.detail), exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors())
        message = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in errors)
        return fail(message or "invalid request", 422, detail=errors)

    @app.exception_handler(Exception)
    async def internal(_, exc: Exception):
        return fail(f"internal error: {exc.__class__.__name__}", 500)

    for add_routes in (task_routes, lora_routes, model_routes, info_routes, songwriter_routes, chat_routes):
        add_routes(app, server)
    event_routes(app, server, lambda job: task_entry(job, server))
    studio_routes(app, server)  # the browser page at /, on the routes above
    return app
