"""From a resolved request to the render job: the editing tasks' recordings encoded, the planner run, the batch
items, their tokens and the starting noise (spec 5, 7, 8). Runs on the pipeline's thread."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from ..conditioning.inputs import ConditionInput, planned_item, tokenize_items
from ..conditioning.prompts import Metas, instruction, lego_sft_caption
from ..conditioning.sources import latents_input, read_audio
from ..conditioning.tasks import edit_hooks, task_context
from ..diffusion.flow import retake
from ..engine import ConditionJob, initial_noise
from ..limits import MIN_FRAMES, frames_of, seconds_of
from .fit import check_fit, planned_run
from .flow_edit import flow_edit_job
from .render import RenderJob
from .request import GenerationRequest, resolve_seeds
from .residency import PhaseMeter
from .spread import batch_padding


@dataclass
class Prepared:
    """The render job, and what the front needs after it: the plans, the source waveform and region (repaint's
    splice) and the length the output is cut to."""

    job: RenderJob
    plans: list
    frames: int  # the output's length in latent frames
    source_wave: np.ndarray | None
    region: tuple[int, int] | None


def encode_inputs(pipe, request: GenerationRequest, seed: int, meter: PhaseMeter, report):
    """(source latents, source waveform, reference latents); the waveform only when the source is audio."""
    channels = pipe.config.audio_acoustic_hidden_dim
    source = None if request.src_latents is None else latents_input(request.src_latents, "source latents", channels)
    reference = (
        None if request.ref_latents is None else latents_input(request.ref_latents, "reference latents", channels)
    )
    if request.src_audio is None and request.ref_audio is None:
        return source, None, reference
    progress = functools.partial(report, "encode")
    chunk, overlap = pipe.vae_chunk, pipe.vae_overlap
    with meter.phase("encode"):
        wave = None if request.src_audio is None else read_audio(request.src_audio, "source audio")
        ref_wave = None if request.ref_audio is None else read_audio(request.ref_audio, "reference audio")

        def encode(vae):
            src = None if wave is None else pipe.engine.encode_audio(vae, wave, seed, chunk, overlap, progress)
            ref = (
                None
                if ref_wave is None
                else pipe.engine.encode_audio(vae, ref_wave, seed + 1, chunk, overlap, progress)
            )
            return src, ref

        encoded_source, encoded_reference = pipe.residency.run("vae_encoder", encode, meter)
    return (
        source if encoded_source is None else encoded_source,
        wave,
        reference if encoded_reference is None else encoded_reference,
    )


def plan(pipe, request: GenerationRequest, duration, seeds: list[int], meter: PhaseMeter, report, interrupted) -> list:
    """One plan per item (its own seed). Without a duration the first item's choice is the batch's length."""
    lm = dict(
        cfg_scale=request.lm_cfg_scale,
        temperature=request.lm_temperature,
        top_p=request.lm_top_p,
        top_k=request.lm_top_k,
        negative=request.negative_prompt,
        codes_prompt=request.lm_codes_prompt,
    )
    metas = dict(bpm=request.bpm, keyscale=request.key, timesignature=request.time_signature)

    def plan_all(planner):
        plans, length = [], duration
        for i, s in enumerate(seeds):
            progress = functools.partial(lambda i, done, n: report("lm", i * n + done, n * len(seeds)), i)
            plans.append(
                planner.plan(
                    request.caption,
                    request.lyrics,
                    duration=length,
                    language=request.language,
                    seed=s,
                    max_duration=pipe.max_seconds,
                    callback=progress,
                    check=interrupted,
                    **metas,
                    **lm,
                )
            )
            if length is None:
                length = float(plans[0].metadata["duration"])
        return plans

    with meter.phase("lm"):
        return pipe.residency.run("planner", plan_all, meter)


def prepare(
    pipe, request: GenerationRequest, thinking: bool, duration, settings, seeds, meter, report, interrupted, lead=None
):
    """The render job of `request` (the model-dependent choices already resolved by the front). `lead` is the
    batch's first seed when `request` is one rank's share of a batch (`spread.py`): what the batch draws once
    (the source's posterior, the timbre clips' order) is drawn from it, as on one machine."""
    job, batch, share = request.job, request.batch_size, lead is not None
    lead = seeds[0] if lead is None else lead
    source, source_wave, reference = encode_inputs(pipe, request, lead, meter, report)
    follow_source = source is not None and duration is None
    if follow_source:
        duration = seconds_of(source.shape[0])
    plans, codes = [], None
    if thinking:
        plans = plan(pipe, request, duration, seeds, meter, report, interrupted)
        if duration is None:
            duration = float(plans[0].metadata["duration"])
            if pipe.check_memory:  # the front checked the shortest song; the DiT and VAE are still to load
                check_fit(pipe, planned_run(pipe, request, pipe.keep_loaded, duration, settings))
        items = [planned_item(p, request.caption, request.lyrics, duration, request.language) for p in plans]
        codes = np.stack([p.codes for p in plans])
    else:
        metas = Metas(duration=duration, bpm=request.bpm, timesignature=request.time_signature, keyscale=request.key)
        line = job.instruction() if request.instruction is None else request.instruction
        if request.audio_codes is not None:  # upstream renders given codes as a cover of them (task and instruction)
            codes, line = np.tile(np.array(request.audio_codes, np.int64), (batch, 1)), instruction("cover")
        items = [ConditionInput(request.caption, request.lyrics, metas, request.language, line)] * batch
    if reference is not None:
        items = [dataclasses.replace(item, reference_latents=reference) for item in items]
    frames = max(MIN_FRAMES, source.shape[0] if follow_source else frames_of(duration))
    silence = pipe.silence_latent
    sources, edit, alt_tokens, region, flow = None, None, None, None, None
    if source is not None and job.needs_source:  # flow-edit's text2music keeps the silence context
        region = job.region(frames, source.shape[0])
        sources = [task_context(job, source, frames, silence, region)] * batch
        edit = edit_hooks(job, source, frames, batch, region, silence)
        if edit is not None and edit.switch_fraction < 1.0:  # cover strength: the last steps follow the caption
            alt_items = [dataclasses.replace(item, instruction=instruction("text2music")) for item in items]
            alt_tokens = tokenize_items(pipe.tokenizer, alt_items, request.empty_caption)
    if pipe.config.is_lego_sft:  # every task on that checkpoint; the cover switch's text2music prompt keeps the caption
        items = [lego_item(item, request) for item in items]
    with meter.phase("text"):
        tokens = tokenize_items(pipe.tokenizer, items, request.empty_caption)
        if share and thinking:  # a share of a batch: its planned prompts padded as the batch's
            tokens = batch_padding(tokens, pipe.tokenizer.pad_id)
        if request.flow_edit:
            flow = flow_edit_job(pipe.tokenizer, request, items, source, frames, silence, seeds)
    noise = initial_noise(seeds, frames, pipe.config.audio_acoustic_hidden_dim, pipe.dtype)
    if request.retake_variance > 0:  # upstream's retake: a second draw mixed in
        others = resolve_seeds(request.retake_seed, batch, "retake_seed")
        other = initial_noise(others, frames, pipe.config.audio_acoustic_hidden_dim, pipe.dtype)
        noise = retake(noise, other, request.retake_variance)
    condition = ConditionJob(items, frames, codes, sources, pipe.config.timbre_fix_frame, lead)
    render_job = RenderJob(tokens, noise, settings, condition, edit, alt_tokens, flow)
    # The DiT renders at least MIN_FRAMES; a shorter clip or source keeps its own length (the whole latent is
    # decoded, then cut). Given codes keep the codes' length, as upstream (duration_for gives it, at least MIN_FRAMES).
    asked = frames if request.audio_codes is not None else frames_of(duration)
    out_frames = min(frames, source.shape[0] if follow_source else asked)
    return Prepared(render_job, plans, out_frames, source_wave, region)


def lego_item(item: ConditionInput, request: GenerationRequest) -> ConditionInput:
    line = item.instruction or instruction("text2music")
    caption = lego_sft_caption(item.caption, request.global_caption, line, request.chunk_mask_mode)
    return dataclasses.replace(item, caption=caption)
