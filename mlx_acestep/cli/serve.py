"""`mlx-acestep serve`: a local server speaking the reference's REST protocol."""

from __future__ import annotations

import math
import os

import click

from ..errors import AceStepError
from ..names import DEFAULT_REPO
from .common import user_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.option(
    "-m",
    "--model",
    default=DEFAULT_REPO,
    show_default=True,
    help="A converted folder, a checkpoint root, a repo id or tiny.",
)
@click.option("--dit", default=None, help="DiT folder inside the model (default: turbo).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=int, default=8001, show_default=True)
@click.option(
    "--api-key",
    default=None,
    help="Require this key (Authorization: Bearer KEY or ai_token); default $ACESTEP_API_KEY.",
)
@click.option(
    "--queue", "queue_size", type=int, default=16, show_default=True, help="Jobs that may wait; more get 429."
)
@click.option("--output-dir", default=None, help="Where results are written (default: a folder in the model cache).")
@click.option(
    "--input-dir", default=None, help="The one folder whose files requests may name as source / reference audio."
)
@click.option("--keep-hours", type=float, default=24.0, show_default=True, help="Results older than this are deleted.")
@click.option("--cache-dir", default=None, help="The model cache.")
@user_errors
def serve(model, dit, host, port, api_key, queue_size, output_dir, input_dir, keep_hours, cache_dir):
    """Serve the reference's REST API (POST /release_task, /query_result; GET /v1/audio, /v1/models, /v1/stats,
    /health) from one MLX pipeline, one job at a time.

    \b
    mlx-acestep serve --model tiny &
    curl -s localhost:8001/release_task -H 'Content-Type: application/json' -d '{"prompt": "piano", "audio_duration": 10, "batch_size": 1}'
    """
    try:
        import uvicorn
    except ImportError:
        raise AceStepError('the server needs its extra: pip install "mlx-acestep[server]"') from None
    from ..hub import open_cache
    from ..pipeline import ACEStep
    from ..server import make_app

    api_key = (api_key if api_key is not None else os.environ.get("ACESTEP_API_KEY")) or None  # empty: no key
    if not (math.isfinite(keep_hours) and keep_hours > 0):
        raise AceStepError(
            f"--keep-hours must be a positive number, got {keep_hours:g} (results would be deleted "
            "as they finish, or never)"
        )
    if host not in LOOPBACK and not api_key:
        click.echo(
            f"WARNING: serving on {host} without an API key: anyone who can reach this port can generate "
            "and download (give --api-key)",
            err=True,
        )
    if queue_size < 1:
        raise AceStepError(f"--queue must be at least 1, got {queue_size}")
    pipe = ACEStep.from_pretrained(model, dit=dit, cache_dir=cache_dir, log=lambda m: click.echo(m, err=True))
    out = output_dir or open_cache(cache_dir) / "served"
    app = make_app(pipe, out, api_key=api_key, queue_size=queue_size, keep_hours=keep_hours, input_dir=input_dir)
    click.echo(f"serving {pipe.name} on http://{host}:{port} (results in {out})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
