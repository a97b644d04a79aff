"""`generate --stream`: the song written as the VAE decodes it (`audio_stream.save_stream`), never held whole."""

from __future__ import annotations

import click

from ..errors import AceStepError, first_line

stream_option = click.option(
    "--stream",
    is_flag=True,
    help="Write each VAE window to disk as it is decoded (a long song never held whole in memory); the file "
    "appears, normalised as usual and the same bits, once complete. Not for repaint's default splice.",
)


def sidecars(params: dict, request, pipe, result, paths) -> tuple[list[dict], list[dict]]:
    """Each item's sidecar and file tags."""
    from .metadata import audio_tags, run_metadata

    metas = [run_metadata(params, result, i, pipe, request) for i in range(len(result.audio))]
    return metas, [audio_tags(m, p) for m, p in zip(metas, paths)]


def generate_streamed(pipe, request, bars, paths, params):
    """`pipe.generate` for `--stream`: the files at `paths` written on the way, tagged as `generate` tags them."""
    from ..audio_stream import save_stream
    from .songwriter import rendered_params

    def tags(result):
        rendered = result.request or request  # with what the planner wrote, as the sidecar
        return sidecars(rendered_params(params, rendered, bool(result.sheets)), rendered, pipe, result, paths)[1]

    stream = pipe.generate_stream(request, callback=bars)
    try:
        save_stream(stream, paths, overwrite=params["overwrite"], tags=tags)
    except FileExistsError as e:
        raise AceStepError(f"{e.filename}: appeared while writing; it was left as it is") from None
    except OSError as e:
        raise AceStepError(f"could not write {paths[0].parent}: {first_line(e)}; nothing was written") from None
    return stream.result
