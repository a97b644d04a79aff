"""`mlx-acestep serve`: a local server speaking the reference's REST protocol."""

from __future__ import annotations

import click

from ..errors import AceStepError
from ..server.config import SERVER, ServerConfig
from .common import model_options, user_errors


def _option(name: str, *flags: str, type=None, envvar: str | None = None):
    """A server setting's flag: its default and help are the server's own (server/config.py); `envvar`: the
    reference's environment variable for it (its api/server_cli.py:24-40), which the flag overrides."""
    field = SERVER[name]
    return click.option(
        *(flags or (f"--{name.replace('_', '-')}",)),
        name,
        type=type,
        default=field.default,
        show_default=field.default is not None,
        help=field.help,
        envvar=envvar,
        show_envvar=envvar is not None,
    )


@click.command()
@_option("host", envvar="ACESTEP_API_HOST")
@_option("port", type=int, envvar="ACESTEP_API_PORT")
@_option("api_key", envvar="ACESTEP_API_KEY")
@_option("queue_size", "--queue", type=int)
@click.option("--output-dir", default=None, help="Where results are written (default: a folder in the model cache).")
@click.option(
    "--input-dir",
    "input_dirs",
    multiple=True,
    help="A folder whose files requests may name (source / reference audio, adapters); repeat it for several.",
)
@_option("keep_hours", type=float)
@_option("max_request_mb", type=float)
@_option("max_upload_mb", type=float)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Let browser pages of this origin call the server (http://host:port, null for a page opened from a file, "
    "or * for any); repeatable. Off by default.",
)
@user_errors  # outside model_options: a bad model flag is a one-line error too
@model_options()
def serve(source, host, port, api_key, queue_size, output_dir, input_dirs, keep_hours, cors_origins, **limits):
    """Serve the reference's REST API (POST /release_task, /query_result, /v1/chat/completions; GET /v1/audio,
    /v1/models, /v1/stats, /health; the LoRA and model routes) one job at a time, on the DiT each task names (the
    model's others load on demand; lego, extract and complete take its base DiT). Ctrl-C stops taking requests, drops
    the waiting jobs and finishes the running one (a second Ctrl-C drops it; SIGTERM drops it at once); a restart on
    the same --output-dir answers for the jobs of the last run.

    \b
    mlx-acestep serve --model tiny &
    curl -s localhost:8001/release_task -H 'Content-Type: application/json' -d '{"prompt": "piano", "audio_duration": 10, "batch_size": 1}'
    """
    from ..cache import open_cache

    config = ServerConfig(  # checked before anything loads
        output_dir=output_dir or open_cache(source.cache_dir) / "served",
        input_dirs=input_dirs,
        host=host,
        port=port,
        api_key=api_key,
        queue_size=queue_size,
        keep_hours=keep_hours,
        **limits,
        cors_origins=cors_origins,
    )
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise AceStepError('the server needs its extra: pip install "mlx-acestep[server]"') from None
    from ..pipeline import ACEStep
    from ..server import make_app
    from ..server.lifecycle import bind, serve_until_stopped

    sock = bind(config.host, config.port)  # a taken port is refused now, not after the model has loaded
    writable_folder(config.output_dir, "--output-dir")

    if config.open_to_others:
        click.echo(
            f"WARNING: serving on {host} without an API key: anyone who can reach this port can generate "
            "and download (give --api-key)",
            err=True,
        )
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    pipe = ACEStep.from_pretrained(source=source, log=say)
    app = make_app(pipe, config=config, source=source)
    ready = (
        f"serving {pipe.name} on http://{host}:{sock.getsockname()[1]} (results in {config.output_dir}; Ctrl-C stops)"
    )
    serve_until_stopped(app, sock, say, ready)


def writable_folder(path, flag: str) -> None:
    """`path` made if missing, and refused in one line unless it is a folder this process may write in."""
    import os
    from pathlib import Path

    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise AceStepError(f"{flag} {path} is a file, not a folder") from None
    except OSError as e:
        raise AceStepError(f"{flag} {path} cannot be made ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise AceStepError(f"{flag} {path} is not writable by this user")
