"""Flow-edit in a generation request (the algorithm: `diffusion/flow_edit.py`): its fields and rules, its sampler
settings, and what a render needs beyond a plain run.

    GenerationRequest("jazz trio, brushed drums", src_audio="song.wav", flow_edit=True,
                      flow_edit_source_caption="synth pop, drum machine")

The target is the request's caption and lyrics, the source what the song in `src_audio` is: its caption and lyrics.
Either left out (None) is the target's own, so only what is given differs; upstream's default is the empty text,
which given as "" is encoded as upstream encodes it. As upstream's overlay (`service_generate_flow_edit.py`) it runs
on text2music (both sides over the silence context, no planner) and on cover / cover-nofsq (both over the cover's
context), and without what it turns off or ignores: refused here, each naming its field.

Forward noise: one generator per item, from `retake_seed` when given, else `seed` (upstream's choice,
`flow_edit_pipeline.py`), drawn as `ForwardNoise` says; a replay with the same seeds draws the same noise.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import mlx.core as mx

from ..conditioning.inputs import PromptTokens, tokenize_items
from ..conditioning.tasks import fit_frames
from ..diffusion.flow_edit import FlowEditSettings
from ..diffusion.schedules import turbo_steps
from ..errors import RequestError
from ..fields import Field
from ..limits import FLOW_EDIT_N_AVG, FLOW_EDIT_WINDOW
from ..names import FLOW_EDIT_TASKS
from .seeds import resolve_seeds

FIELDS = (
    Field("flow_edit", "bool"),
    Field("flow_edit_source_caption", "text", optional=True),
    Field("flow_edit_source_lyrics", "text", optional=True),
    Field("flow_edit_n_min", "number", *FLOW_EDIT_WINDOW),
    Field("flow_edit_n_max", "number", *FLOW_EDIT_WINDOW),
    Field("flow_edit_n_avg", "integer", *FLOW_EDIT_N_AVG),
)
OPTIONS = tuple(f.name for f in FIELDS[1:])  # what only flow-edit reads

# What flow-edit runs without (upstream's pipeline turns DCW and Heun off, its dispatch ignores the rest): the field,
# whether its value asks for it, and why.
WITHOUT = (
    ("sampler", lambda v: v != "euler", "flow-edit integrates with Euler only (upstream turns heun off)"),
    ("method", lambda v: v != "ode", "flow-edit runs the ODE only (@name@ ode)"),
    ("dcw", lambda v: v is True, "flow-edit runs without DCW, as upstream turns it off; leave @name@ out"),
    ("cover_strength", lambda v: v != 1.0, "flow-edit conditions every step on the cover (@name@ 1)"),
    ("cover_noise_strength", lambda v: v != 0, "flow-edit starts from the song itself; leave @name@ out"),
    ("retake_variance", lambda v: v != 0, "flow-edit mixes no retake noise (its forward noise is retake_seed's)"),
    ("thinking", lambda v: v is True, "flow-edit runs without the planner, as upstream; leave @name@ out"),
)


def check_flow_edit(request) -> None:
    """Flow-edit's rules against the rest of the request (the fields' own ranges are checked already)."""
    if not request.flow_edit:
        defaults = {f.name: f.default for f in dataclasses.fields(request)}
        for name in OPTIONS:
            if getattr(request, name) != defaults[name]:
                raise RequestError(name, "@name@ is for flow-edit; turn flow-edit on")
        return
    if request.task not in FLOW_EDIT_TASKS:
        raise RequestError("task", f"flow-edit runs on {', '.join(FLOW_EDIT_TASKS)} (as upstream), not {request.task}")
    if request.src_audio is None and request.src_latents is None:
        raise RequestError("src_audio", "flow-edit changes a song: give it as @name@")
    if request.flow_edit_n_min > request.flow_edit_n_max:
        raise RequestError(
            "flow_edit_n_max",
            f"@name@ {request.flow_edit_n_max:g} is before flow_edit_n_min {request.flow_edit_n_min:g}",
        )
    caption, lyrics = source_texts(request)
    if (caption, lyrics) == (request.caption, request.lyrics):
        raise RequestError(
            "flow_edit_source_caption",
            "flow-edit needs what the song is now: give @name@ or flow_edit_source_lyrics, unlike the target's",
        )
    for name, asks, why in WITHOUT:
        if asks(getattr(request, name)):
            raise RequestError(name, f"@name@: {why}")


def source_texts(request) -> tuple[str, str]:
    """The source side's caption and lyrics (the target's where not given)."""
    caption, lyrics = request.flow_edit_source_caption, request.flow_edit_source_lyrics
    return request.caption if caption is None else caption, request.lyrics if lyrics is None else lyrics


def flow_edit_settings(request, family: str, defaults, stacklevel: int) -> FlowEditSettings:
    """The run's settings: the family's steps and shift as given (turbo's steps held to 8 as upstream's service holds
    them before its flow-edit), APG for base / SFT, none for turbo (upstream forces its scale to 1)."""
    guidance = defaults.guidance if request.guidance is None else request.guidance
    if family == "turbo" and guidance != 1.0:
        warnings.warn(
            f"turbo runs flow-edit without guidance (CFG), as upstream; guidance={guidance} is ignored",
            stacklevel=stacklevel,
        )
    return FlowEditSettings(
        steps=turbo_steps(request.steps) if family == "turbo" else request.steps or defaults.steps,
        shift=defaults.shift if request.shift is None else request.shift,
        n_min=request.flow_edit_n_min,
        n_max=request.flow_edit_n_max,
        n_avg=request.flow_edit_n_avg,
        guidance_scale=1.0 if family == "turbo" else guidance,
        velocity_norm_threshold=request.velocity_norm_threshold,
        velocity_ema_factor=request.velocity_ema_factor,
    )


@dataclass
class FlowEditJob:
    """What a flow-edit render adds: the source side's prompt tokens, the song's latents `[B, frames, C]` and the
    forward noise's seeds, one per item."""

    tokens: PromptTokens
    song: mx.array
    seeds: list[int]


def flow_edit_job(tokenizer, request, items, source: mx.array, frames: int, silence, seeds) -> FlowEditJob:
    """The source side of `items` (their metadata, language and instruction, the source's caption and lyrics), the
    song cropped or padded with silence to `frames`, and the forward noise's seeds."""
    caption, lyrics = source_texts(request)
    tokens = tokenize_items(tokenizer, [dataclasses.replace(i, caption=caption, lyrics=lyrics) for i in items], True)
    song = fit_frames(source, frames, silence)
    song = mx.broadcast_to(song[None], (len(items), *song.shape))
    noise_seeds = (
        seeds if request.retake_seed is None else resolve_seeds(request.retake_seed, len(items), "retake_seed")
    )
    return FlowEditJob(tokens, song, noise_seeds)


def summary(request, seed: int, retake_seed: int | None) -> dict | None:
    """The sidecar's record of one item's flow-edit, with the seed its forward noise came from (None without one)."""
    if not request.flow_edit:
        return None
    caption, lyrics = source_texts(request)
    noise = {"from": "seed", "seed": seed} if retake_seed is None else {"from": "retake_seed", "seed": retake_seed}
    window = [request.flow_edit_n_min, request.flow_edit_n_max]
    return dict(source_caption=caption, source_lyrics=lyrics, window=window, n_avg=request.flow_edit_n_avg) | {
        "forward_noise": noise
    }
