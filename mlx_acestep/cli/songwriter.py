"""The planner as songwriter and listener on the command line: `generate`'s `--sample`, `--instrumental` and
`--format-input` (declared once here), how what the planner writes is printed, and the `describe` verb."""

from __future__ import annotations

import json

import click

from ..errors import AceStepError
from .common import PhaseBars, model_options, user_errors

SONGWRITER_FIELDS = ("sample", "instrumental")  # the flags that are the request field of the same name


def songwriter_options(fn):
    """`generate`'s flags for the planner's writing, in this order in --help."""
    for option in reversed(
        [
            click.option(
                "--sample",
                default=None,
                metavar="TEXT",
                help="Let the planner write the song from one sentence first (caption, lyrics, bpm, key, time "
                "signature, duration, language; upstream's sample mode), instead of CAPTION; '' lets it invent one. "
                "What you give beside it (--duration, --bpm, ...) wins.",
            ),
            click.option("--instrumental", is_flag=True, help="With --sample: a song without vocals."),
            click.option(
                "--format-input",
                is_flag=True,
                help="Let the planner tidy the caption and lyrics into the form the model was trained on first "
                "(upstream's Format); the bpm, key, time signature, duration and language you give are kept.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


def sample_texts(params: dict) -> tuple[str, None]:
    """The caption and lyrics with --sample: none (it writes them); giving them too is an error."""
    if any(params[k] is not None for k in ("caption", "prompt_file", "lyrics", "lyrics_file")):
        raise AceStepError("--sample writes the caption and lyrics: leave CAPTION, --lyrics and their files out")
    return "", None


def rendered_params(params: dict, request, written: bool) -> dict:
    """The command line of what was rendered: with what the planner wrote (--sample, --format-input), so that its
    replay renders the same song without writing it again."""
    out = dict(params, caption=request.caption, lyrics=request.lyrics)
    if written:
        out.update(sample=None, instrumental=False, format_input=False, duration=request.duration, bpm=request.bpm)
        out.update(keyscale=request.key, time_signature=request.time_signature, language=request.language)
    return out


def describe_plan(meta: dict) -> str:
    """The planner's metadata on one line, caption last."""
    names = (
        ("bpm", "bpm"),
        ("keyscale", "key"),
        ("timesignature", "time signature"),
        ("language", "language"),
        ("duration", "duration"),
    )
    parts = [f"{label} {meta[k]}" for k, label in names if meta.get(k) not in (None, "")]
    if meta.get("caption"):
        parts.append(f"caption: {meta['caption']}")
    return "".join(c if c.isprintable() else "?" for c in ", ".join(parts))


def printable(text: str) -> str:
    """What the planner wrote, safe on a terminal (its control characters shown as '?'; line breaks kept)."""
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


def echo_written(sheets) -> None:
    for sheet in sheets:
        click.echo(f"  planner wrote ({sheet.task}): " + describe_plan(sheet.metadata()))


@click.command()
@click.argument("audio", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the description as one JSON object (for scripts).")
@click.option("--seed", type=int, default=None, help="The planner's sampling seed (default random; printed).")
@click.option(
    "--lm-temperature",
    type=float,
    default=None,
    help="The planner's sampling temperature (default 0.3, as upstream's understand).",
)
@user_errors
@model_options()
def describe(audio, as_json, seed, lm_temperature, source):
    """Describe a recording: the caption, lyrics, bpm, key, time signature, duration and language the planner hears
    in it (upstream's understand: the audio through the VAE and the DiT's FSQ tokenizer into 5 Hz codes, then the
    planner LM). AUDIO: any file soundfile reads, any rate, 1 to 600 s.

    \b
    mlx-acestep describe song.wav
    mlx-acestep describe song.flac --json > song.json
    """
    from ..conditioning.sources import audio_file_seconds
    from ..pipeline import ACEStep

    audio_file_seconds(audio, "audio")  # a bad file fails before the model loads
    pipe = ACEStep.from_pretrained(source=source, log=lambda m: click.echo(m, err=True), keep_loaded=False)
    if source.model == "tiny":
        click.echo("note: --model tiny has random weights: its description is noise", err=True)
    bars = PhaseBars()
    try:
        sheet = pipe.understand(audio, seed=seed, temperature=lm_temperature, callback=bars)
    finally:
        bars.close()
    if as_json:
        click.echo(json.dumps({k: v for k, v in sheet.to_dict().items() if k != "task"}, ensure_ascii=False))
        return
    click.echo(f"{audio}: {len(sheet.codes)} codes heard, seed {sheet.seed}, {sheet.seconds:.1f} s")
    click.echo("  planner: " + describe_plan(sheet.metadata()))
    click.echo("lyrics:" + ("\n" + printable(sheet.lyrics) if sheet.lyrics.strip() else " (none)"))
