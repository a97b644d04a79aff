"""A preview while training: a short render of the first clip's caption through the engine with the decoder under
training itself (its adapter as it is now, dropout off), so no adapter is written to disk for it and no second DiT
is loaded. The text encoder, the condition encoder and the VAE are loaded for it and freed after."""

from __future__ import annotations

import gc
from pathlib import Path

import mlx.core as mx

from ..audio import peak_limit, peak_normalize, save_audio
from ..checkpoint import Checkpoint
from ..conditioning.inputs import ConditionInput, tokenize_items
from ..conditioning.prompts import Metas, instruction
from ..diffusion.sampler import run_all
from ..engine import ConditionJob, initial_noise
from ..limits import MIN_FRAMES, VAE_CHUNK, VAE_OVERLAP, frames_of
from ..names import INSTRUMENTAL

PREVIEW_SECONDS = 10.0  # the shortest song generation renders


def render_preview(checkpoint: Checkpoint, dit, caption: str, seed: int, path: Path, engine=None) -> Path:
    """`dit` holds the decoder under training (and the null condition for base / SFT guidance)."""
    from ..pipeline.request import sampler_settings  # the public request's rules for the family's defaults

    engine = engine or checkpoint.engine()
    frames = max(MIN_FRAMES, frames_of(PREVIEW_SECONDS))
    item = ConditionInput(caption, INSTRUMENTAL, Metas(duration=PREVIEW_SECONDS), "unknown", instruction("text2music"))
    settings = sampler_settings(checkpoint.family)  # the family's defaults, as generate runs them
    text = engine.encode_text(checkpoint.load("text_encoder"), tokenize_items(checkpoint.tokenizer, [item]))
    job = ConditionJob([item], frames, timbre_frames=checkpoint.config.timbre_fix_frame, seed=seed)
    condition = engine.condition(checkpoint.load("condition"), text, job)
    noise = initial_noise([seed], frames, checkpoint.config.audio_acoustic_hidden_dim, checkpoint.dtype)
    dit.decoder.eval()  # no adapter dropout in a render
    try:
        latents = run_all(engine.denoise(dit, condition, noise, settings))
    finally:
        dit.decoder.train()
    wave = engine.decode(checkpoint.load("vae"), latents, VAE_CHUNK, VAE_OVERLAP)
    audio = peak_normalize(peak_limit(wave.astype(mx.float32))[0])
    del wave, latents, condition, text
    gc.collect()
    mx.clear_cache()  # the text encoder's, condition encoder's and VAE's buffers go before training goes on
    path.parent.mkdir(parents=True, exist_ok=True)  # inside the run's own folder
    return save_audio(path, audio, overwrite=True)  # refuses non-finite audio: nothing half-written
