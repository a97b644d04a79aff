"""`mlx-acestep generate`: the flags map onto one `GenerationRequest`, validated before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.core import ParameterSource

from ..errors import AceStepError, MissingDiT, first_line
from ..limits import DEFAULT_LM_CFG_SCALE, DEFAULT_LM_TEMPERATURE, DEFAULT_LM_TOP_P, SECONDS
from ..names import AUDIO_FORMATS, TASKS
from . import songwriter
from .common import PhaseBars, model_options, model_source, peak_rss_bytes, read_text_arg, user_errors
from .flow_edit_options import FLOW_EDIT_FIELDS, flow_edit_options
from .memory import memory_options, pipeline_options
from .outputs import checked_paths, parse_seeds
from .repaint_options import REPAINT_FIELDS, repaint_options
from .sampler_options import SAMPLER_FIELDS, schedule, upstream_sampler_options
from .streamed import generate_streamed, sidecars, stream_option


def rtf_text(rtf: float) -> str:
    """Two significant digits at least: a run at 0.004x real time is not "0.00x"."""
    return f"{rtf:.2f}x" if rtf >= 0.1 else f"{rtf:.2g}x"


def speed_hint() -> None:
    """On Linux, MLX's bundled BLAS is ~40x slower than OpenBLAS: say how to preload it (a hint, not a re-exec,
    since the library must be loaded before the process starts and a re-exec would hide the user's own setup)."""
    import os
    import platform

    from ..blas import OPENBLAS, preload_command

    if platform.system() == "Linux" and "openblas" not in os.environ.get("LD_PRELOAD", ""):
        where = (
            f"{preload_command()} mlx-acestep ..."
            if Path(OPENBLAS).exists()
            else (f"sudo apt-get install libopenblas0-pthread, then {preload_command()} mlx-acestep ...")
        )
        click.echo(f"hint: MLX's bundled CPU BLAS is ~40x slower than OpenBLAS; for speed run {where}", err=True)


def _load(request, source, options: dict):
    """The pipeline; a base-only task on a model without the base DiT says which checkpoint it needs."""
    from ..pipeline import ACEStep

    try:
        return ACEStep.from_pretrained(
            source=source, log=lambda m: click.echo(m, err=True), keep_loaded=False, **options
        )
    except MissingDiT as e:
        if request.required_dit:
            raise AceStepError(
                f"the {request.task} task needs the base model ({request.required_dit}), which {source.model} "
                f"lacks: {e}"
            ) from None
        raise


@click.command()
@click.argument("caption", required=False)
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
    default=None,
    help="Read the caption from a file ('-' for stdin) instead of CAPTION.",
)
@songwriter.songwriter_options
@click.option("--lyrics", default=None, help="Lyrics text ([verse], [chorus] ... tags; default [Instrumental]).")
@click.option(
    "--lyrics-file",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
    default=None,
    help="Read the lyrics from a file ('-' for stdin).",
)
@click.option(
    "--duration",
    type=float,
    default=None,
    help=f"Seconds of audio, {SECONDS[0]:g} to {SECONDS[1]:g} (under 5.12 s the model renders 5.12 s and the clip is "
    "cut from it). Default: the planner chooses (thinking), else 30; editing tasks: the source's length.",
)
@click.option("--bpm", type=int, default=None, help="Tempo, 30 to 300 (default: the planner's choice, else N/A).")
@click.option("--key", "keyscale", default=None, help='Key and scale, e.g. "C major" (default N/A).')
@click.option("--time-signature", default=None, help="Beats per bar, e.g. 4 (default N/A).")
@click.option("--language", default=None, help="Vocal language code (en, zh, ja, ...).")
@click.option(
    "--seed",
    multiple=True,
    metavar="N[,N...]",
    help="Random seed (item i of a batch uses seed + i); several (--seed 1,2,3 or repeated) give a batch "
    "with one each. Default random.",
)
@click.option("--batch", type=int, default=1, show_default=True, help="Songs to generate at once, 1 to 8.")
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Diffusion steps: base/SFT 1-200 (default 32 base, 50 SFT); turbo 1-8 (default 8), as upstream's service.",
)
@click.option(
    "--shift",
    type=float,
    default=None,
    help="Timestep shift (default 3).",
)
@click.option("--guidance", type=float, default=None, help="CFG scale for base/SFT (default 7; turbo has none).")
@upstream_sampler_options
@repaint_options
@flow_edit_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(AUDIO_FORMATS),
    default=None,
    help="Output format (default: from -o, else wav; mp3 and opus where libsndfile encodes them).",
)
@click.option(
    "-o",
    "--output",
    default=None,
    help="Output file (default acestep-SEED.wav, never replacing a file); a batch adds _0, _1, ...",
)
@click.option("--overwrite", is_flag=True, help="Replace the output file if it exists (else that is an error).")
@click.option("--no-normalize", is_flag=True, help="Skip the -1 dBFS peak normalisation.")
@stream_option
@click.option(
    "--thinking/--no-thinking",
    default=None,
    help="Run the 5 Hz planner LM first: it fills in the metadata you left out and writes the audio codes "
    "the DiT renders. Default: on when the model has a planner.",
)
@click.option(
    "--lm-cfg-scale",
    type=float,
    default=DEFAULT_LM_CFG_SCALE,
    show_default=True,
    help="The planner's CFG scale for the codes.",
)
@click.option(
    "--lm-temperature",
    type=float,
    default=DEFAULT_LM_TEMPERATURE,
    show_default=True,
    help="The planner's sampling temperature.",
)
@click.option(
    "--lm-top-p",
    type=float,
    default=DEFAULT_LM_TOP_P,
    show_default=True,
    help="The planner's nucleus (top-p) sampling.",
)
@click.option(
    "--task",
    type=click.Choice(TASKS),
    default="text2music",
    show_default=True,
    help="text2music, or an editing task on --src-audio: cover (re-style), cover-nofsq (re-style from the "
    "source's full detail, upstream's Remix), repaint (regenerate a region), "
    "extract / lego (pull out / add --track), complete (add --tracks). extract, lego, complete need the base DiT.",
)
@click.option(
    "--src-audio",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="The source recording of an editing task.",
)
@click.option(
    "--ref-audio",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="A recording whose timbre to borrow (any task).",
)
@click.option("--repaint-start", type=float, default=None, help="repaint/lego: region start in seconds (default 0).")
@click.option(
    "--repaint-end",
    type=float,
    default=None,
    help="repaint/lego: region end in seconds (default: the end of the source).",
)
@click.option("--track", default=None, help="extract/lego: the track, e.g. vocals, drums, bass, guitar.")
@click.option("--tracks", default=None, help="complete: comma-separated tracks to add, e.g. drums,bass.")
@click.option(
    "--cover-strength",
    type=float,
    default=None,
    help="cover, cover-nofsq: the share of steps conditioned on the source (below 1 the rest follow the caption).",
)
@click.option(
    "--lora",
    "loras",
    multiple=True,
    metavar="PATH[:SCALE]",
    help="A LoRA/LoKr adapter for the DiT (a PEFT folder, a ComfyUI or LyCORIS .safetensors), scale default 1; "
    "repeat to stack several.",
)
@click.option(
    "--from-metadata",
    type=click.Path(dir_okay=False, exists=True, path_type=str),
    help="Replay a run from its NAME.json (or the audio file); options given beside it override.",
)
@memory_options
@user_errors(batch_size="batch", key="keyscale")
@model_options(build=False)  # --from-metadata may fill the model flags in: the source is built in _run
def generate(**params):
    """Generate music from CAPTION (a description: genre, mood, instruments).

    Each file gets a sidecar NAME.json and tags with what made it (caption, seed, model, settings, the planner's
    choices); --from-metadata NAME.json (or the audio file) runs it again, with any option given beside it.

    \b
    mlx-acestep generate "gentle piano, warm strings" --duration 30 -o piano.wav
    mlx-acestep generate "gentle piano" --lm 0.6B --lm-quantize q8 -o piano.wav   # a smaller, faster planner
    mlx-acestep generate "jazz trio" --task cover --src-audio song.wav -o jazz.wav
    mlx-acestep generate "choir" --task repaint --src-audio song.wav --repaint-start 20 --repaint-end 30 -o fix.wav
    mlx-acestep generate "jazz trio" --src-audio song.wav --flow-edit --flow-edit-source-caption "synth pop" -o jazz.wav
    mlx-acestep generate "lofi beat" --lora my-style/ --lora extra.safetensors:0.5 -o lofi.wav
    mlx-acestep generate --from-metadata piano.json --seed 8 -o piano-8.wav   # the same run, another seed
    mlx-acestep generate --sample "a melancholic folk song about leaving home" -o folk.wav   # the planner writes it
    mlx-acestep generate "lofi, rain" --lyrics-file draft.txt --format-input -o lofi.wav   # tidied first
    mlx-acestep generate "gentle piano" --model tiny --duration 10 -o a.wav   # offline smoke test (noise)
    """
    from .metadata import read_metadata, replayable

    ctx = click.get_current_context()
    if params["from_metadata"]:
        raw = read_metadata(params["from_metadata"])
        recorded = replayable(raw, ctx, params["from_metadata"])
        for name, value in recorded.items():
            if ctx.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
                params[name] = value
        if ctx.get_parameter_source("prompt_file") is ParameterSource.COMMANDLINE:
            params["caption"] = None  # a caption file given beside the metadata replaces its caption
        if ctx.get_parameter_source("lyrics_file") is ParameterSource.COMMANDLINE:
            params["lyrics"] = None  # and a lyrics file its lyrics
    from ..distributed import quiet_unless_leader

    with quiet_unless_leader():  # under mlx.launch rank 0 reports (pipeline/spread.py)
        _run(params)


def _run(params: dict) -> None:
    from ..adapters import parse_lora_spec
    from ..distributed import is_leader

    specs = [parse_lora_spec(spec) for spec in params["loras"]]  # a malformed --lora fails before anything loads
    request = _request(params)
    # the planner is for text2music only, and given codes are what it would write
    thinking = False if request.uses_source or request.audio_codes is not None else params["thinking"]
    planner = thinking is not False or request.sample is not None or request.format  # it may write the song first
    if not planner and (params["lm"] is not None or params["lm_quantize"] != "none"):
        raise AceStepError("--lm and --lm-quantize choose the planner; they mean nothing with --no-thinking")
    inputs = ("src_audio", "ref_audio", "lyrics_file", "prompt_file", "from_metadata")
    paths = checked_paths(params, request, inputs)
    pipe, result = _render(params, request, specs, planner, paths)
    if not is_leader():  # under mlx.launch rank 0 writes the files
        return
    rendered = result.request or request  # with what the planner wrote (--sample, --format-input)
    _save(songwriter.rendered_params(params, rendered, bool(result.sheets)), rendered, pipe, result, paths)
    speed_hint()  # after the result: never between a user and a one-line error


def _texts(params: dict) -> tuple[str, str | None]:
    """The caption and lyrics, from the flags or their files."""
    caption, lyrics = params["caption"], params["lyrics"]
    prompt_file, lyrics_file = params["prompt_file"], params["lyrics_file"]
    if params["sample"] is not None:
        return songwriter.sample_texts(params)
    if (caption is None) == (prompt_file is None):
        raise AceStepError("give the caption as CAPTION or --prompt-file, one of them")
    if lyrics is not None and lyrics_file is not None:
        raise AceStepError("give --lyrics or --lyrics-file, not both")
    if prompt_file == "-" and lyrics_file == "-":
        raise AceStepError("only one of --prompt-file and --lyrics-file can read stdin")
    if prompt_file is not None:
        caption = read_text_arg(prompt_file, "the caption")
    if lyrics_file is not None:
        lyrics = read_text_arg(lyrics_file, "the lyrics")
    return caption, lyrics


def _request(params: dict):
    """The request the flags describe, with its seeds drawn (so the file names are known before the run)."""
    from ..pipeline.request import GenerationRequest, resolve_seeds

    caption, lyrics = _texts(params)
    batch, seeds = params["batch"], parse_seeds(params["seed"])
    if isinstance(seeds, list) and click.get_current_context().get_parameter_source("batch") is ParameterSource.DEFAULT:
        batch = len(seeds)  # --seed 1,2,3: a batch of three
    seeds = resolve_seeds(seeds, batch)
    retake = params["retake_seed"]
    # drawn now, so each file records the retake seed that made it (flow-edit's forward noise comes from it)
    if params["retake_variance"] or (params["flow_edit"] and retake is not None):
        retake = resolve_seeds(retake, batch, "retake_seed")
    tracks = params["tracks"]
    given = dict(  # flags left out take the request's own defaults
        lyrics=lyrics,
        key=params["keyscale"],
        tracks=[t.strip() for t in tracks.split(",")] if tracks else None,
        format=params["format_input"],
        **{name: params[name] for name in _SAME_NAMES},
        **schedule(params),
    )
    return GenerationRequest(
        caption=caption,
        seed=seeds,
        retake_seed=retake,
        batch_size=batch,
        normalize=not params["no_normalize"],
        **{k: v for k, v in given.items() if v is not None},
    )


# The flags whose parameter is the request field of the same name.
_SAME_NAMES = (
    "duration",
    "bpm",
    "time_signature",
    "language",
    "steps",
    "shift",
    "guidance",
    "thinking",
    "lm_cfg_scale",
    "lm_temperature",
    "lm_top_p",
    "task",
    "src_audio",
    "ref_audio",
    "repaint_start",
    "repaint_end",
    "track",
    "cover_strength",
    *SAMPLER_FIELDS,
    *REPAINT_FIELDS,
    *FLOW_EDIT_FIELDS,
    *songwriter.SONGWRITER_FIELDS,
)


def _render(params: dict, request, specs, planner: bool, paths):
    """Load the model (and adapters) and generate, with progress bars and warnings on stderr."""
    import warnings

    def show_warning(message, category, filename, lineno, file=None, line=None):
        click.echo(f"warning: {message}", err=True)

    bars = PhaseBars()
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        source = model_source(params, planner=planner)
        pipe = _load(request, source.replace(dit=source.dit or request.required_dit), pipeline_options(params))
        if params["model"] == "tiny":
            click.echo(
                "note: --model tiny has random weights; it checks the pipeline end to end and produces noise", err=True
            )
        for adapter_path, scale in specs:
            adapter = pipe.load_lora(adapter_path, scale)
            click.echo(f"adapter {adapter.summary()}, scale {scale:g}", err=True)
        try:
            if params["stream"]:
                return pipe, generate_streamed(pipe, request, bars, paths, params)
            return pipe, pipe.generate(request, callback=bars)
        finally:
            bars.close()


def _save(params: dict, request, pipe, result, paths) -> None:
    """The audio files with their tags and sidecars, and what the run took."""
    from ..files import write_text

    overwrite = params["overwrite"]
    metas, tags = sidecars(params, request, pipe, result, paths)
    written = paths if params["stream"] else result.save_as(paths, overwrite=overwrite, tags=tags)
    for file, meta in zip(written, metas):
        try:
            write_text(file.with_suffix(".json"), json.dumps(meta, indent=2, ensure_ascii=False), overwrite=overwrite)
        except (OSError, AceStepError) as e:  # checked before the run; something changed since
            raise AceStepError(
                f"{file.with_suffix('.json')}: the metadata could not be written ({first_line(e)}); {file} was written"
            ) from None
    songwriter.echo_written(result.sheets)
    for i, (p, s) in enumerate(zip(written, result.seeds)):
        click.echo(f"wrote {p} ({result.duration:g} s, 48 kHz stereo, seed {s})")
        if result.metadata:
            click.echo("  planner: " + songwriter.describe_plan(result.metadata[i]))
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    click.echo(
        f"RTF {rtf_text(result.rtf)} real time ({phases}); peak memory {result.peak_memory_bytes / 2**30:.2f} GiB "
        f"(MLX arrays), {peak_rss_bytes() / 2**30:.2f} GiB resident (the process)"
    )
