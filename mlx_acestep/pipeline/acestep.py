"""Text to music and the editing tasks: a `GenerationRequest` -> 48 kHz stereo audio (spec 5, 7, 8).

    pipe = ACEStep.from_pretrained("ACE-Step/Ace-Step1.5")
    result = pipe.generate("gentle piano, warm strings", lyrics="[verse] ...", duration=30, seed=7)
    result.save("song.wav")

Phases, each timed and with its peak memory recorded: `lm` (the planner, when
thinking), `encode` (source / reference audio of the editing tasks), `text`
(tokenizer and Qwen3 text encoder), `condition` (condition encoder and context
latents), `dit` (the sampler), `vae` (chunked decode), `post` (peak limiting,
repaint's splice, -1 dBFS normalisation). Weight loading is timed apart as
`load`. With `keep_loaded=False` each phase loads only the modules it runs and
frees them afterwards (`residency.py`), so peak memory is that of the largest
phase, not the sum.

The library never prints: progress goes to `callback`, notices to `warnings`.
All MLX work of a pipeline runs on its own thread (`worker.py`), so it may be
called from any thread; calls wait for each other, and `callback` runs on that
thread. Peak-memory figures are MLX's, process-wide (two pipelines running at
once see each other's memory).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..adapters import AdapterStack
from ..conditioning.inputs import (
    ConditionInput,
    PromptTokens,
    code_hints,
    encode_prompts,
    planned_item,
    reference_clips,
    tokenize_items,
)
from ..conditioning.prompts import Metas, PromptTokenizer, instruction
from ..conditioning.tasks import edit_hooks, task_context
from ..diffusion.sampler import BaseSettings, EditHooks, TurboSettings, sample_base, sample_turbo
from ..errors import AceStepError
from ..hub import ModelFolders
from ..limits import HOP, MIN_FRAMES, SAMPLE_RATE, SECONDS, VAE_CHUNK, VAE_OVERLAP, frames_of, seconds_of
from ..loading import load_silence_latent, read_json
from ..models.dit import AceStepConfig
from ..models.dit.config import model_family
from ..names import DEFAULT_REPO
from ..source import ModelSource
from .adapters import AdapterMethods
from .postprocess import postprocess
from .request import GenerationRequest, resolve_seeds, sampler_settings, source_frames, steps_of
from .residency import PhaseMeter, Residency
from .results import Generated, GenerationResult, ProgressCallback, reporter
from .sources import encode_wave, latents_input, read_audio
from .worker import Worker

PHASES = ("text", "condition", "dit", "vae", "post")  # "lm" first when the planner runs, "encode" for editing tasks


def check_finite(x: mx.array, phase: str) -> None:
    """NaN or inf out of a phase would be written as a file of clipped noise that looks like success (as the
    reference checks since its NaN fix): stop here, naming the phase."""
    if not bool(mx.all(mx.isfinite(x)).item()):
        raise AceStepError(
            f"{phase} produced NaN or infinite values (numerical overflow: try --dtype float32, "
            "or another seed); nothing was written"
        )


def initial_noise(seeds: Sequence[int], frames: int, channels: int, dtype: mx.Dtype) -> mx.array:
    """`[B, T, C]` standard normal noise in the model dtype, one generator per item (spec 5.5)."""
    return mx.concatenate([mx.random.normal((1, frames, channels), dtype=dtype, key=mx.random.key(s)) for s in seeds])


class ACEStep(AdapterMethods):
    """The pipeline over converted folders."""

    def __init__(
        self,
        folders: ModelFolders,
        *,
        keep_loaded: bool = True,
        vae_chunk: int = VAE_CHUNK,
        vae_overlap: int = VAE_OVERLAP,
        cache_limit_gb: float = 2.0,
        name: str | None = None,
    ):
        """`keep_loaded=False` loads each phase's modules when it starts and frees them after (lowest peak
        memory, for one-shot use); True keeps them loaded across calls (apps that generate repeatedly)."""
        self.folders = folders
        self.name = name or folders.dit.name
        self.keep_loaded = keep_loaded
        self.vae_chunk, self.vae_overlap = vae_chunk, vae_overlap
        self.cache_limit = int(cache_limit_gb * 2**30)
        fields = read_json(folders.dit / "config.json")
        self.config = AceStepConfig.from_dict(fields, str(folders.dit / "config.json"))
        self.dtype = getattr(mx, fields.get("dtype", "float32"))
        self.family = model_family(self.config, self.name)
        self.tokenizer = PromptTokenizer(folders.text_encoder)
        self.silence_latent = load_silence_latent(folders.dit)
        self.residency = Residency(folders, keep_loaded, int(np.prod(self.config.fsq_input_levels)))
        self.adapters = AdapterStack()  # LoRA / LoKr on the decoder (adapters.py)
        self._worker = Worker(f"mlx-acestep {self.name}")
        weakref.finalize(self, self._worker.close, False)

    def close(self) -> None:
        """Free the modules and stop the pipeline's thread (a later call starts them again)."""
        self.unload()
        self._worker.close()

    def __enter__(self) -> ACEStep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | ModelSource = DEFAULT_REPO,
        *,
        source: ModelSource | None = None,
        log: Callable[[str], None] | None = None,
        **kwargs,
    ) -> ACEStep:
        """Load the model a `ModelSource` names: a converted MLX folder, a PyTorch checkpoint root (original or
        diffusers layout, converted once into the cache), a Hugging Face repo id (downloaded, converted, cached) or
        "tiny". `from_pretrained(source=ModelSource("tiny", lm=None))`, or its fields as keywords:
        `from_pretrained("tiny", lm=None)` (`dit`, `dtype`, `quantize`, `q_group_size`, `lm`, `lm_quantize`,
        `cache_dir`, `reconvert`: see `ModelSource`). Other keyword arguments go to the constructor (`keep_loaded`,
        `vae_chunk`, ...).
        """
        options = {name: kwargs.pop(name) for name in ModelSource.options() if name in kwargs}
        if isinstance(model, ModelSource):
            source, model = (model if source is None else source), DEFAULT_REPO
        if source is None:
            source = ModelSource(model, **options)
        elif options or model != DEFAULT_REPO:
            raise TypeError(f"from_pretrained: give source= or the model's keywords, not both ({', '.join(options)})")
        return cls(source.resolve(log), **kwargs)

    # -- what the model allows -----------------------------------------------------------------

    @property
    def max_seconds(self) -> int:
        """The longest song this checkpoint renders: 600 s, or less if its silence latent is shorter."""
        return int(min(SECONDS[1], seconds_of(self.silence_latent.shape[1])))

    def sampler_settings(
        self, steps: int | None = None, shift: float | None = None, guidance: float | None = None, method: str = "ode"
    ) -> TurboSettings | BaseSettings:
        """The model family's defaults with the given overrides; turbo warns about what it ignores."""
        return sampler_settings(self.family, steps, shift, guidance, method, stacklevel=3)

    def resident(self) -> list[str]:
        """The modules loaded right now (roles, or whole components with `keep_loaded`)."""
        return self.residency.resident()

    def unload(self) -> None:
        """Free every loaded module (they load again on the next call)."""
        self._worker.run(self.residency.clear)

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest | str | None = None,
        lyrics: str | None = None,
        /,
        *,
        callback: ProgressCallback | None = None,
        **fields,
    ) -> GenerationResult:
        """Generate from a `GenerationRequest`, or from its fields: `generate("gentle piano", "[verse] ...", duration=30)`.

        The fields and what they mean: `GenerationRequest`. In short: `seed` one int (item i uses
        seed + i), a list (one per item) or None (random); `steps`, `shift`, `guidance` default per model
        family (turbo ignores steps and guidance, with a warning); `thinking` (default: when the model has a
        planner LM) runs the 5 Hz planner first, which writes the metadata left out (and the duration when
        `duration` is None) and the audio codes the DiT renders; `task` is text2music or an editing task
        (cover, repaint, extract, lego, complete) on `src_audio`; `ref_audio` lends its timbre.
        `callback(Progress)` is called as work advances; returning False cancels (raises `Cancelled`).
        """
        if lyrics is not None:
            fields["lyrics"] = lyrics
        if isinstance(request, GenerationRequest):
            request = request.replace(**fields) if fields else request
        else:
            request = GenerationRequest(**({"caption": request} if request is not None else {}), **fields)
        # What depends on the model is resolved here, on the caller's thread, so warnings point at its line.
        request.check_model(self.family, self.name)
        for notice in request.notices():
            warnings.warn(notice, stacklevel=2)
        thinking = request.thinking_for(self.folders.lm is not None)
        duration = request.duration_for(thinking)
        settings = request.sampler_settings(self.family, stacklevel=3)
        frames = source_frames(request.src_audio, request.src_latents)
        if duration is None and frames is not None and seconds_of(frames) < SECONDS[0]:
            warnings.warn(
                f"the source lasts {seconds_of(frames):.2f} s, less than {SECONDS[0]:g} s: the output "
                "follows it (give a duration to render longer)",
                stacklevel=2,
            )
        call_adapters = self.read_call_adapters(request.loras)  # bad adapter files fail before any work
        return self._worker.run(
            lambda: self._generate(request, thinking, duration, settings, callback, call_adapters), request
        )

    def _generate(
        self, request: GenerationRequest, thinking: bool, duration, settings, callback, call_adapters=()
    ) -> GenerationResult:
        job = request.job
        seeds = resolve_seeds(request.seed, request.batch_size)
        batch = request.batch_size
        meter = PhaseMeter()
        source, source_wave, reference = self._encode_inputs(request, seeds[0], meter, callback)
        follow_source = source is not None and duration is None
        if follow_source:
            duration = seconds_of(source.shape[0])
        plans, codes = [], None
        if thinking:
            plans = self._plan(request, duration, seeds, callback, meter)
            duration = float(plans[0].metadata["duration"]) if duration is None else duration
            items = [planned_item(p, request.caption, request.lyrics, duration, request.language) for p in plans]
            codes = np.stack([p.codes for p in plans])
        else:
            metas = Metas(
                duration=duration, bpm=request.bpm, timesignature=request.time_signature, keyscale=request.key
            )
            items = [
                ConditionInput(request.caption, request.lyrics, metas, request.language, job.instruction())
            ] * batch
        if reference is not None:
            items = [dataclasses.replace(item, reference_latents=reference) for item in items]
        frames = max(MIN_FRAMES, source.shape[0] if follow_source else frames_of(duration))
        sources, edit, alt_tokens, region = None, None, None, None
        if source is not None:
            region = job.region(frames, source.shape[0])
            sources = [task_context(job, source, frames, self.silence_latent, region)] * batch
            edit = edit_hooks(job, source, frames, batch, region, self.silence_latent)
            if edit is not None and edit.switch_fraction < 1.0:  # cover strength: the last steps follow the caption
                alt_items = [dataclasses.replace(item, instruction=instruction("text2music")) for item in items]
                alt_tokens = tokenize_items(self.tokenizer, alt_items)

        with meter.phase("text"):
            tokens = tokenize_items(self.tokenizer, items)
        noise = initial_noise(seeds, frames, self.config.audio_acoustic_hidden_dim, self.dtype)
        out = self.generate_from_tokens(
            tokens,
            frames,
            noise,
            settings,
            items=items,
            codes=codes,
            sources=sources,
            edit=edit,
            alt_tokens=alt_tokens,
            seed=seeds[0],
            callback=callback,
            meter=meter,
            adapters=call_adapters,
        )
        if follow_source:  # a source shorter than the 128-frame minimum keeps its own length
            frames = min(frames, source.shape[0])
        with meter.phase("post"):
            audio = postprocess(out.waveform[:, : frames * HOP], job, source_wave, region, request.normalize)
        return GenerationResult(
            audio=audio,
            sample_rate=SAMPLE_RATE,
            seeds=seeds,
            duration=seconds_of(frames),
            seconds=dict(meter.seconds),
            peak_memory=dict(meter.peak),
            latents=np.array(out.latents.astype(mx.float32)),
            metadata=[p.metadata for p in plans],
            codes=codes,
        )

    def encode_condition(
        self, items: Sequence[ConditionInput], frames: int, seed: int = 0
    ) -> tuple[mx.array, mx.array]:
        """What the DiT is given for text2music `items` over `frames` latent frames: (encoder states `[B, L, E]`,
        context latents `[B, frames, 128]`), through the same phases as `generate` (the trainer caches these)."""

        def run():
            tokens = tokenize_items(self.tokenizer, items)

            def text_phase(text_encoder):
                text = encode_prompts(text_encoder, tokens)
                mx.eval(text.text_hidden_states, text.lyric_hidden_states)
                return text

            text = self.residency.run("text_encoder", text_phase)
            (states, context), _ = self.residency.run(
                "condition",
                lambda dit: self._condition(
                    dit, text, None, items, frames, None, None, [False] * len(items), self.config.timbre_fix_frame, seed
                ),
            )
            mx.eval(states, context)
            return states, context

        return self._worker.run(run)

    # -- audio in ------------------------------------------------------------------------------

    def encode_audio(
        self,
        audio: str | Path | np.ndarray,
        seed: int = 0,
        meter: PhaseMeter | None = None,
        what: str = "source audio",
        progress=None,
    ) -> mx.array:
        """A recording (a file at any rate, or a 48 kHz `[samples, channels]` array) -> VAE latents `[T, 64]`,
        a seeded draw from the posterior as the reference samples it (spec 5.10)."""
        wave = read_audio(audio, what)
        return self._worker.run(
            lambda: self.residency.run(
                "vae_encoder",
                lambda vae: encode_wave(vae, wave, seed, self.vae_chunk, self.vae_overlap, progress),
                meter,
            ),
            wave,
        )

    def _encode_inputs(self, request: GenerationRequest, seed: int, meter: PhaseMeter, callback):
        """(source latents, source waveform, reference latents); the waveform only when the source is audio."""
        report = reporter(callback, self._worker.cancel)
        channels = self.config.audio_acoustic_hidden_dim
        source = None if request.src_latents is None else latents_input(request.src_latents, "source latents", channels)
        reference = (
            None if request.ref_latents is None else latents_input(request.ref_latents, "reference latents", channels)
        )
        wave = None
        if request.src_audio is None and request.ref_audio is None:
            return source, wave, reference
        progress = functools.partial(report, "encode")
        with meter.phase("encode"):
            wave = None if request.src_audio is None else read_audio(request.src_audio, "source audio")
            ref_wave = None if request.ref_audio is None else read_audio(request.ref_audio, "reference audio")

            def encode(vae):
                src = None if wave is None else encode_wave(vae, wave, seed, self.vae_chunk, self.vae_overlap, progress)
                ref = (
                    None
                    if ref_wave is None
                    else encode_wave(vae, ref_wave, seed + 1, self.vae_chunk, self.vae_overlap, progress)
                )
                return src, ref

            encoded_source, encoded_reference = self.residency.run("vae_encoder", encode, meter)
        return (
            (source if encoded_source is None else encoded_source),
            wave,
            (reference if encoded_reference is None else encoded_reference),
        )

    # -- the planner ---------------------------------------------------------------------------

    def _plan(self, request: GenerationRequest, duration: float | None, seeds: list[int], callback, meter) -> list:
        """One plan per item (its own seed). Without a duration the first item's choice is the batch's length."""
        report = reporter(callback, self._worker.cancel)
        interrupted = functools.partial(reporter(None, self._worker.cancel), "lm", 0, 0)  # Ctrl-C between tokens
        lm = dict(
            cfg_scale=request.lm_cfg_scale,
            temperature=request.lm_temperature,
            top_p=request.lm_top_p,
            negative=request.negative_prompt,
        )

        def plan_all(planner):
            plans, length = [], duration
            for i, s in enumerate(seeds):
                progress = functools.partial(lambda i, done, n: report("lm", i * n + done, n * len(seeds)), i)
                plans.append(
                    planner.plan(
                        request.caption,
                        request.lyrics,
                        duration=length,
                        bpm=request.bpm,
                        keyscale=request.key,
                        timesignature=request.time_signature,
                        language=request.language,
                        seed=s,
                        max_duration=self.max_seconds,
                        callback=progress,
                        check=interrupted,
                        **lm,
                    )
                )
                if length is None:
                    length = float(plans[0].metadata["duration"])
            return plans

        with meter.phase("lm"):
            return self.residency.run("planner", plan_all, meter)

    # -- the phases after tokenization ---------------------------------------------------------

    def generate_from_tokens(
        self,
        tokens: PromptTokens,
        frames: int,
        noise: mx.array,
        settings: TurboSettings | BaseSettings | None = None,
        *,
        items: Sequence[ConditionInput] | None = None,
        codes: np.ndarray | None = None,
        sources: Sequence[tuple[mx.array, mx.array, bool]] | None = None,
        edit: EditHooks | None = None,
        alt_tokens: PromptTokens | None = None,
        timbre_frames: int | None = None,
        seed: int = 0,
        callback: ProgressCallback | None = None,
        meter: PhaseMeter | None = None,
        adapters: Sequence = (),
    ) -> Generated:
        """The pipeline after tokenization: text encoder -> condition -> sampler -> VAE (no post-processing).

        `noise` is the starting `[B, frames, 64]` latent noise. `items` carry reference latents (None:
        the silence latent's first `timbre_frames`, default the config's 750, as the reference).
        `codes` `[B, n]` are planner audio codes: their detokenized hints become the context (spec 5.3).
        `sources` are the editing tasks' (source latents `[frames, C]`, chunk mask `[frames]`, is_cover) per item;
        `edit` their sampler hooks, and `alt_tokens` the prompts of cover strength's second condition.
        `adapters` are this call's adapter entries, applied on top of the loaded ones (`load_lora`).
        """

        def run():
            previous = mx.set_cache_limit(self.cache_limit)  # freed buffers kept for reuse, bounded
            try:
                return self._run(
                    tokens,
                    frames,
                    noise,
                    settings,
                    items,
                    codes,
                    sources,
                    edit,
                    alt_tokens,
                    timbre_frames,
                    seed,
                    callback,
                    meter or PhaseMeter(),
                    list(adapters),
                )
            finally:
                mx.set_cache_limit(previous)
                mx.clear_cache()

        return self._worker.run(run, noise, items, sources, edit)

    def _run(
        self,
        tokens,
        frames,
        noise,
        settings,
        items,
        codes,
        sources,
        edit,
        alt_tokens,
        timbre_frames,
        seed,
        callback,
        meter,
        call_adapters,
    ) -> Generated:
        batch = tokens.text_ids.shape[0]
        channels = self.config.audio_acoustic_hidden_dim
        if noise.shape != (batch, frames, channels):
            raise AceStepError(f"noise has shape {tuple(noise.shape)}, expected {(batch, frames, channels)}")
        if frames > self.silence_latent.shape[1]:
            raise AceStepError(
                f"{frames} latent frames exceed the checkpoint's silence latent ({self.silence_latent.shape[1]} frames = "
                f"{seconds_of(self.silence_latent.shape[1]):g} s)"
            )
        if sources is not None and (
            len(sources) != batch or any(s.shape[0] != frames or m.shape[0] != frames for s, m, _ in sources)
        ):
            raise AceStepError(f"sources must hold {batch} items of {frames} frames")
        items = items or [ConditionInput("-")] * batch
        settings = settings or self.sampler_settings()
        timbre_frames = timbre_frames or self.config.timbre_fix_frame
        report = reporter(callback, self._worker.cancel)

        report("text", 0, 1)
        with meter.phase("text"):

            def text_phase(text_encoder):
                out = (
                    encode_prompts(text_encoder, tokens),
                    None if alt_tokens is None else encode_prompts(text_encoder, alt_tokens),
                )
                mx.eval(
                    out[0].text_hidden_states,
                    out[0].lyric_hidden_states,
                    None if out[1] is None else out[1].text_hidden_states,
                )
                return out

            text, alt_text = self.residency.run("text_encoder", text_phase, meter)
        report("text", 1, 1)

        report("condition", 0, 1)
        with meter.phase("condition"):
            covers = [bool(c) for _, _, c in sources] if sources is not None else [codes is not None] * batch
            role = "condition_codes" if any(covers) else "condition"
            condition, alt = self.residency.run(
                role,
                lambda dit: self._condition(
                    dit, text, alt_text, items, frames, codes, sources, covers, timbre_frames, seed
                ),
                meter,
            )
            if alt is not None:
                edit = dataclasses.replace(edit, switch_to=alt)
        report("condition", 1, 1)

        with meter.phase("dit"):
            report("dit", 0, steps_of(settings))
            steps_done = functools.partial(report, "dit")

            def sample(dit):
                self.adapters.apply(dit.decoder, call_adapters)
                try:
                    if isinstance(settings, TurboSettings):
                        x = sample_turbo(dit.decoder, *condition, settings, noise=noise, callback=steps_done, edit=edit)
                    else:
                        x = sample_base(
                            dit.decoder,
                            *condition,
                            dit.null_condition_emb,
                            settings,
                            noise=noise,
                            callback=steps_done,
                            edit=edit,
                        )
                    mx.eval(x)
                    return x
                finally:
                    if call_adapters:  # this call's adapters come off again
                        self.adapters.apply(dit.decoder)

            self._drop_stale_fused()
            latents = self.residency.run("denoiser", sample, meter)
            condition = edit = None  # freed before the VAE phase
            check_finite(latents, "the diffusion (DiT) phase")

        with meter.phase("vae"):

            def decode(vae):
                wave = vae.decode_chunked(
                    latents.astype(vae.dtype),
                    self.vae_chunk,
                    self.vae_overlap,
                    progress=lambda d, n: report("vae", d, n),
                )
                mx.eval(wave)
                return wave

            waveform = self.residency.run("vae", decode, meter)
            check_finite(waveform, "the VAE decode")
        return Generated(text.text_hidden_states, text.lyric_hidden_states, latents, waveform)

    def _condition(self, dit, text, alt_text, items, frames, codes, sources, covers, timbre_frames, seed):
        """((encoder states, context latents), the cover-strength switch's pair or None) for the sampler."""
        batch, dtype, silence = len(covers), dit.dtype, self.silence_latent
        refer, order = reference_clips(items, silence, timbre_frames, dtype, seed)
        masks, hints = mx.ones((batch, frames)), None
        if sources is not None:
            src = mx.stack([s for s, _, _ in sources]).astype(dtype)
            masks = mx.stack([m for _, m, _ in sources])
        elif codes is None:
            src = mx.broadcast_to(silence[:, :frames].astype(dtype), (batch, frames, silence.shape[2]))
        else:
            src = hints = code_hints(dit, codes, batch, frames, silence, dtype)

        def prepare(states, src, covers, hints=None):
            prepared = dit.prepare_condition(
                states.text_hidden_states.astype(dtype),
                states.text_attention_mask,
                text.lyric_hidden_states.astype(dtype),
                text.lyric_attention_mask,
                refer,
                mx.array(order),
                src,
                masks,
                mx.array(covers),
                silence,
                hints=hints,
            )
            pair = (prepared.encoder_hidden_states, prepared.context_latents)
            mx.eval(*pair)
            return pair

        main = prepare(text, src, covers, hints)
        if alt_text is None:
            return main, None
        # cover strength: the text2music condition the last steps switch to, over a silence context
        silent = mx.broadcast_to(silence[:, :frames].astype(dtype), src.shape)
        return main, prepare(alt_text, silent, [False] * batch)
