"""The phases after tokenization, each through the pipeline's residency: text encoder -> condition -> DiT -> VAE.

The engine (`mlx_acestep.engine`) does the work; this module loads what each phase needs, times it, reports
progress (which may cancel), applies the adapters around the DiT phase and checks that nothing non-finite comes
out. Runs on the pipeline's thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ..conditioning.inputs import PromptTokens
from ..diffusion.edits import EditHooks
from ..diffusion.sampler import BaseSettings, TurboSettings, run_all, steps_of
from ..engine import ConditionJob
from ..errors import AceStepError
from ..limits import seconds_of
from ..loading import WEIGHTS_FILE
from ..safetensors_io import first_non_finite
from .flow_edit import FlowEditJob
from .residency import PhaseMeter
from .results import Generated


@dataclass
class RenderJob:
    """One batch after tokenization: its prompts' tokens, the starting noise `[B, frames, 64]`, the sampler
    settings, what the condition step is asked for, the editing tasks' sampler hooks, `alt_tokens`, the
    prompts of cover strength's second condition, and flow-edit's source side and song."""

    tokens: PromptTokens
    noise: mx.array
    settings: TurboSettings | BaseSettings
    condition: ConditionJob
    edit: EditHooks | None = None
    alt_tokens: PromptTokens | None = None
    flow_edit: FlowEditJob | None = None


def check_finite(x: mx.array, phase: str, folder: Path | None = None) -> None:
    """NaN or inf out of a phase would be written as a file of clipped noise that looks like success (as the
    reference checks since its NaN fix): stop here, naming the phase, and the damaged tensor when the phase's
    model `folder` holds one (then it is not an overflow, and another dtype or seed would not help)."""
    if not bool(mx.all(mx.isfinite(x)).item()):
        damaged = first_non_finite(folder, WEIGHTS_FILE) if folder is not None else None
        if damaged:
            raise AceStepError(
                f"{phase} produced NaN or infinite values: the model's weights hold some ({damaged}); the "
                "converted model is damaged: convert it again; nothing was written"
            )
        raise AceStepError(
            f"{phase} produced NaN or infinite values (numerical overflow: try --dtype float32, "
            "or another seed); nothing was written"
        )


def _folder(pipe, component: str) -> Path | None:
    """The component's model folder, where the pipeline has one (a test's stand-in may not)."""
    return getattr(getattr(pipe, "folders", None), component, None)


def check_job(job: RenderJob, channels: int, silence_frames: int) -> None:
    batch, frames = job.tokens.text_ids.shape[0], job.condition.frames
    if job.noise.shape != (batch, frames, channels):
        raise AceStepError(f"noise has shape {tuple(job.noise.shape)}, expected {(batch, frames, channels)}")
    if frames > silence_frames:
        raise AceStepError(
            f"{frames} latent frames exceed the checkpoint's silence latent ({silence_frames} frames = "
            f"{seconds_of(silence_frames):g} s)"
        )
    sources = job.condition.sources
    if sources is not None and (
        len(sources) != batch or any(s.shape[0] != frames or m.shape[0] != frames for s, m, _ in sources)
    ):
        raise AceStepError(f"sources must hold {batch} items of {frames} frames")


def cover_switch_job(job: ConditionJob, silence: mx.array) -> ConditionJob:
    """Cover strength's second condition: text2music over a silence context with the same chunk masks."""
    silent = silence[0, : job.frames]
    return dataclasses.replace(job, codes=None, sources=[(silent, m, False) for _, m, _ in job.sources])


def render(pipe, job: RenderJob, report, meter: PhaseMeter, adapters=(), sink=None) -> Generated:
    """Text encoder -> condition -> sampler -> VAE for `job` (no post-processing). With `sink`, each decoded
    window goes to `sink(item, start_sample, audio)` as the VAE makes it and `waveform` is None."""
    engine, residency = pipe.engine, pipe.residency
    check_job(job, pipe.config.audio_acoustic_hidden_dim, pipe.silence_latent.shape[1])

    report("text", 0, 1)
    with meter.phase("text"):

        def text_phase(text_encoder):
            text = engine.encode_text(text_encoder, job.tokens)
            other = job.alt_tokens if job.flow_edit is None else job.flow_edit.tokens  # never both (the request)
            return text, None if other is None else engine.encode_text(text_encoder, other)

        text, alt_text = residency.run("text_encoder", text_phase, meter)
    report("text", 1, 1)

    report("condition", 0, 1)
    with meter.phase("condition"):

        def condition_phase(dit):
            main = engine.condition(dit, text, job.condition)
            if alt_text is None:
                return main, None
            # flow-edit's source side shares the target's context; cover strength's runs over silence
            alt_job = job.condition if job.flow_edit else cover_switch_job(job.condition, pipe.silence_latent)
            return main, engine.condition(dit, alt_text, alt_job)

        condition, alt = residency.run(job.condition.part, condition_phase, meter)
        edit = job.edit if alt is None or job.flow_edit else dataclasses.replace(job.edit, switch_to=alt)
    report("condition", 1, 1)

    with meter.phase("dit"):
        report("dit", 0, steps_of(job.settings))

        def sample(dit):
            pipe.adapters.apply(dit.decoder, adapters)
            try:
                if job.flow_edit is None:
                    steps = engine.denoise(dit, condition, job.noise, job.settings, edit)
                else:
                    fe = job.flow_edit
                    steps = engine.flow_edit(dit, alt, condition, fe.song, job.settings, fe.seeds)
                return run_all(steps, lambda done, total: report("dit", done, total))
            finally:
                if adapters:  # this call's adapters come off again
                    pipe.adapters.apply(dit.decoder)

        pipe.adapters.drop_stale_fused()
        latents = residency.run("denoiser", sample, meter)
        condition = edit = alt = None  # freed before the VAE phase
        check_finite(latents, "the diffusion (DiT) phase", _folder(pipe, "dit"))

    with meter.phase("vae"):
        progress = lambda done, total: report("vae", done, total)  # noqa: E731
        chunk, overlap = pipe.vae_chunk, pipe.vae_overlap
        if sink is None:
            waveform = residency.run("vae", lambda vae: engine.decode(vae, latents, chunk, overlap, progress), meter)
            check_finite(waveform, "the VAE decode", _folder(pipe, "vae"))
        else:

            def checked(item, start, audio):
                # before the window leaves: a stream cannot take it back
                check_finite(audio, "the VAE decode", _folder(pipe, "vae"))
                sink(item, start, audio)

            waveform = None
            residency.run(
                "vae", lambda vae: engine.decode_stream(vae, latents, chunk, overlap, checked, progress), meter
            )
    return Generated(text.text_hidden_states, text.lyric_hidden_states, latents, waveform)
