"""`mlx-acestep serve`: a local server speaking the reference's REST protocol."""

from __future__ import annotations

import os

import click

from ..errors import AceStepError
from ..server.config import SERVER, ServerConfig
from .common import model_options, user_errors


def _option(name: str, *flags: str, type=None):
    """A server setting's flag: its default and help are the server's own (server/config.py)."""
    field = SERVER[name]
    return click.option(
        *(flags or (f"--{name.replace('_', '-')}",)),
        name,
        type=type,
        default=field.default,
        show_default=field.default is not None,
        help=field.help,
    )


@click.command()
@_option("host")
@_option("port", type=int)
@click.option("--api-key", default=None, help=SERVER["api_key"].help)  # its default is read when it runs
@_option("queue_size", "--queue", type=int)
@click.option("--output-dir", default=None, help="Where results are written (default: a folder in the model cache).")
@click.option(
    "--input-dir",
    "input_dirs",
    multiple=True,
    help="A folder whose files requests may name (source / reference audio, adapters); repeat it for several.",
)
@_option("keep_hours", type=float)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Let browser pages of this origin call the server (http://host:port, or * for any); repeatable. Off by default.",
)
@user_errors  # outside model_options: a bad model flag is a one-line error too
@model_options()
def serve(source, host, port, api_key, queue_size, output_dir, input_dirs, keep_hours, cors_origins):
    """Serve the reference's REST API (POST /release_task, /query_result, /v1/chat/completions; GET /v1/audio,
    /v1/models, /v1/stats, /health; the LoRA and model routes) one job at a time, on the DiT each task names (the model's others load on
    demand; lego, extract and complete take its base DiT).

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
        api_key=api_key if api_key is not None else os.environ.get("ACESTEP_API_KEY"),
        queue_size=queue_size,
        keep_hours=keep_hours,
        cors_origins=cors_origins,
    )
    try:
        import uvicorn
    except ImportError:
        raise AceStepError('the server needs its extra: pip install "mlx-acestep[server]"') from None
    from ..pipeline import ACEStep
    from ..server import make_app

    if config.open_to_others:
        click.echo(
            f"WARNING: serving on {host} without an API key: anyone who can reach this port can generate "
            "and download (give --api-key)",
            err=True,
        )
    pipe = ACEStep.from_pretrained(source=source, log=lambda m: click.echo(m, err=True))
    app = make_app(pipe, config=config, source=source)
    click.echo(f"serving {pipe.name} on http://{host}:{port} (results in {config.output_dir})", err=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
