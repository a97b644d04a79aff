"""The engine: text -> condition -> denoise -> decode as functions of loaded modules and arrays.

No files, threads or residency here: the caller loads the modules (`PARTS` says which parts of which component
each step needs), hands them in, and owns evaluation, progress and cancellation of the denoising loop, which is a
generator of steps. Generation (`pipeline/`) and training (`training/`) run the same steps, so what the trainer
caches is what generation would compute. Tests inject a fake module (or a subclass of `Engine`) instead of
patching module globals.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .conditioning.inputs import ConditionInput, PromptTokens, TextStates, code_hints, encode_prompts, reference_clips
from .diffusion.edits import EditHooks
from .diffusion.flow_edit import FlowEditSettings, ForwardNoise, run_flow_edit
from .diffusion.loop import Step
from .diffusion.sampler import BaseSettings, TurboSettings, run_steps
from .models.vae.windows import plan_windows

# engine step -> (component, the parts of it to build; None = all)
PARTS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "text_encoder": ("text_encoder", None),
    "condition": ("dit", ("encoder",)),
    "condition_codes": ("dit", ("encoder", "tokenizer", "detokenizer")),  # also turns codes / covers into hints
    "denoiser": ("dit", ("decoder", "null_condition_emb")),
    "vae": ("vae", ("decoder",)),
    "vae_encoder": ("vae", ("encoder", "decoder")),
    "planner": ("lm", None),
    "audio_codes": ("dit", ("tokenizer",)),  # latents -> the planner's 5 Hz codes (describe / understand)
}


@dataclass
class ConditionJob:
    """What the condition step is asked for: the batch items over `frames` latent frames, and what the editing
    tasks and the planner add. `sources` are per item (source latents `[frames, C]`, chunk mask `[frames]`,
    is_cover); `codes` `[B, n]` planner audio codes, whose detokenized hints become the context (spec 5.3)."""

    items: Sequence[ConditionInput]
    frames: int
    codes: np.ndarray | None = None
    sources: Sequence[tuple[mx.array, mx.array, bool]] | None = None
    timbre_frames: int = 750
    seed: int = 0

    @property
    def covers(self) -> list[bool]:
        if self.sources is not None:
            return [bool(c) for _, _, c in self.sources]
        return [self.codes is not None] * len(self.items)

    @property
    def part(self) -> str:
        """The DiT parts this condition needs: the FSQ tokenizer too when any row is a cover."""
        return "condition_codes" if any(self.covers) else "condition"


def silence_source(silence: mx.array, frames: int, batch: int, dtype) -> mx.array:
    """text2music's source latents `[B, frames, C]`: the checkpoint's silence latent (spec 5.4)."""
    return mx.broadcast_to(silence[:, :frames].astype(dtype), (batch, frames, silence.shape[2]))


class Engine:
    """The steps of a generation over one checkpoint's silence latent (the only array every step shares)."""

    def __init__(self, silence_latent: mx.array):
        self.silence = silence_latent

    def encode_text(self, text_encoder, tokens: PromptTokens) -> TextStates:
        """The caption's hidden states and the lyrics' embeddings, evaluated."""
        text = encode_prompts(text_encoder, tokens)
        mx.eval(text.text_hidden_states, text.lyric_hidden_states)
        return text

    def condition(self, dit, text: TextStates, job: ConditionJob) -> tuple[mx.array, mx.array]:
        """(encoder states `[B, L, E]`, context latents `[B, frames, 2C]`), evaluated."""
        batch, dtype, frames = len(job.items), dit.dtype, job.frames
        masks, hints = mx.ones((batch, frames)), None
        if job.sources is not None:
            src = mx.stack([s for s, _, _ in job.sources]).astype(dtype)
            masks = mx.stack([m for _, m, _ in job.sources])
        elif job.codes is None:
            src = silence_source(self.silence, frames, batch, dtype)
        else:
            src = hints = code_hints(dit, job.codes, batch, frames, self.silence, dtype)
        refer, order = reference_clips(job.items, self.silence, job.timbre_frames, dtype, job.seed)
        prepared = dit.prepare_condition(
            text.text_hidden_states.astype(dtype),
            text.text_attention_mask,
            text.lyric_hidden_states.astype(dtype),
            text.lyric_attention_mask,
            refer,
            mx.array(order),
            src,
            masks,
            mx.array(job.covers),
            self.silence,
            hints=hints,
        )
        pair = (prepared.encoder_hidden_states, prepared.context_latents)
        mx.eval(*pair)
        return pair

    def text2music_context(self, dit, frames: int, batch: int, dtype) -> mx.array:
        """The context latents of text2music without running the condition encoder (what training needs)."""
        src = silence_source(self.silence, frames, batch, dtype)
        return dit.context_latents(src, mx.ones((batch, frames)), mx.array([False] * batch), self.silence)

    def denoise(
        self,
        dit,
        condition: tuple[mx.array, mx.array],
        noise: mx.array,
        settings: TurboSettings | BaseSettings,
        edit: EditHooks | None = None,
        decoder=None,
    ) -> Iterator[Step]:
        """The denoising steps from `noise` (a generator: the caller evaluates each). `decoder` overrides the
        DiT's own (the trainer's preview runs its decoder under training)."""
        null = dit.null_condition_emb if isinstance(settings, BaseSettings) else None
        return run_steps(decoder or dit.decoder, condition, settings, noise, null=null, edit=edit)

    def flow_edit(
        self, dit, source, target, song: mx.array, settings: FlowEditSettings, seeds: Sequence[int], decoder=None
    ) -> Iterator[Step]:
        """Flow-edit's steps (a generator): `song` `[B, T, C]` moved from the `source` condition toward the `target`
        one, its forward noise drawn from `seeds`, one per item."""
        decoder = decoder or dit.decoder
        noise = ForwardNoise(song.shape, decoder.scale_shift_table.dtype, seeds)
        null = dit.null_condition_emb if settings.guided else None
        return run_flow_edit(decoder, source, target, song, settings, noise, null)

    def decode(self, vae, latents: mx.array, chunk: int, overlap: int, progress=None) -> mx.array:
        """Latents `[B, T, 64]` -> waveform `[B, samples, 2]` in overlapping chunks, evaluated."""
        wave = vae.decode_chunked(latents.astype(vae.dtype), chunk, overlap, progress=progress)
        mx.eval(wave)
        return wave

    def decode_stream(self, vae, latents: mx.array, chunk: int, overlap: int, sink, progress=None) -> None:
        """`decode`, handing each window's final audio to `sink(item, start_sample, audio)` as it is decoded (items
        in order, windows in order) instead of keeping the whole waveform: the same windows, so the same samples."""
        per_item = len(plan_windows(latents.shape[1], chunk, overlap))
        start = 0
        for done, total, audio in vae.iter_decode(latents.astype(vae.dtype), chunk, overlap):
            start = 0 if (done - 1) % per_item == 0 else start
            sink((done - 1) // per_item, start, audio)
            start += audio.shape[0]
            if progress is not None:
                progress(done, total)
        mx.clear_cache()

    def encode_audio(
        self, vae, wave: np.ndarray, seed: int, chunk: int, overlap: int, progress: Callable | None = None
    ) -> mx.array:
        """A 48 kHz stereo waveform -> VAE latents `[T, 64]`, a seeded draw from the posterior as the reference
        samples it (spec 5.10; the reference's draw is unseeded)."""
        mean, std = vae.encode_moments_chunked(mx.array(wave)[None], chunk, overlap, progress=progress)
        latents = vae.sample(mean, std, key=mx.random.key(seed))[0]
        mx.eval(latents)
        return latents

    def audio_codes(self, dit, latents: mx.array) -> np.ndarray:
        """VAE latents `[T, 64]` -> the 5 Hz FSQ codes `[ceil(T / 5)]` the planner reads, the last window padded with
        the silence latent (upstream's `convert_src_audio_to_codes`)."""
        indices = dit.tokenizer.tokenize(latents[None].astype(dit.dtype), self.silence)[1]
        return np.array(indices).reshape(-1).astype(np.int64)


def initial_noise(seeds: Sequence[int], frames: int, channels: int, dtype: mx.Dtype) -> mx.array:
    """`[B, T, C]` standard normal noise in the model dtype, one generator per item (spec 5.5)."""
    return mx.concatenate([mx.random.normal((1, frames, channels), dtype=dtype, key=mx.random.key(s)) for s in seeds])
