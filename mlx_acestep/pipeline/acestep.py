"""Text to music: caption, lyrics and metadata -> 48 kHz stereo audio (spec 5).

    pipe = ACEStep.from_pretrained("ACE-Step/Ace-Step1.5")
    result = pipe.generate("gentle piano, warm strings", lyrics="[Instrumental]", duration=30, seed=7)
    result.save("song.wav")

Phases, each timed and with its peak memory recorded: `text` (tokenizer and
Qwen3 text encoder), `condition` (condition encoder and context latents),
`dit` (the sampler), `vae` (chunked decode), `post` (peak limiting and -1 dBFS
normalisation). Weight loading is timed apart as `load`. With
`keep_loaded=False` each phase loads only the modules it runs and frees them
afterwards, so peak memory is that of the largest phase, not the sum.

The library never prints: progress goes to `callback`, notices to `warnings`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..audio import SAMPLE_RATE, peak_limit, peak_normalize, save_audio
from ..models.dit import AceStepConfig
from .conditioning import ConditionInput, PromptTokens, reference_clips, tokenize_items
from ..errors import AceStepError
from ..loading import load_component, load_silence_latent, read_json
from .prompts import Metas, PromptTokenizer, instruction
from .sampler import BaseSettings, EditHooks, TurboSettings, sample_base, sample_turbo, turbo_timesteps
from .tasks import (
    BASE_ONLY, Task, check_source, fit_frames, region_mask, region_weights, repaint_settings, splice, task_context)

MIN_SECONDS, MAX_SECONDS = 10.0, 600.0
MAX_BATCH = 8
MIN_FRAMES = 128  # the reference pads every target to at least 128 latent frames (spec 5.2)
PHASES = ("text", "condition", "dit", "vae", "post")  # and "lm" first when the planner runs


@dataclass(frozen=True)
class SamplerDefaults:
    steps: int
    shift: float
    guidance: float


# Per model family, as the reference's UI runs them (spec 9.2): turbo always runs its 8-step table
# without CFG; base and SFT use APG guidance 7.0. Shift 3.0 is the UI/REST default for all.
MODEL_DEFAULTS = {
    "turbo": SamplerDefaults(steps=8, shift=3.0, guidance=1.0),
    "base": SamplerDefaults(steps=32, shift=3.0, guidance=7.0),
    "sft": SamplerDefaults(steps=50, shift=3.0, guidance=7.0),
}


@dataclass(frozen=True)
class Progress:
    """What `callback` receives: `done` of `total` units of `phase` are finished."""

    phase: str
    done: int
    total: int


class Cancelled(AceStepError):
    """The progress callback returned False."""


@dataclass
class GenerationResult:
    audio: np.ndarray  # [B, samples, channels] float32, post-processed
    sample_rate: int
    seeds: list[int]
    duration: float  # seconds of audio per item
    seconds: dict[str, float]  # per phase (and "load")
    peak_memory: dict[str, int]  # bytes, MLX's peak during each phase (weights included)
    latents: np.ndarray  # [B, T, 64] float32, what the VAE decoded
    metadata: list[dict] = field(default_factory=list)  # per item, what the planner chose (empty without thinking)
    codes: np.ndarray | None = None  # [B, int(5 d)] the planner's audio codes

    @property
    def compute_seconds(self) -> float:
        return sum(v for k, v in self.seconds.items() if k != "load")

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def rtf(self) -> float:
        """Seconds of audio made per second of compute (higher is faster, as ACE-Step reports it); loading excluded."""
        return self.duration * len(self.audio) / max(self.compute_seconds, 1e-9)

    @property
    def peak_memory_bytes(self) -> int:
        return max(self.peak_memory.values(), default=0)

    def save(self, path: str | Path, subtype: str | None = None) -> list[Path]:
        """Write each item (`.wav` or `.flac`, atomically); a batch gets `name_0.wav`, `name_1.wav`, ..."""
        path = Path(path)
        paths = [path] if len(self.audio) == 1 else [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(len(self.audio))]
        return [save_audio(p, a, self.sample_rate, subtype) for p, a in zip(paths, self.audio)]


@dataclass
class Generated:
    """The raw outputs of one run, before post-processing (what the parity fixtures store)."""

    text_hidden_states: mx.array
    lyric_hidden_states: mx.array
    latents: mx.array  # [B, T, 64]
    waveform: mx.array  # [B, T * 1920, 2]


class PhaseMeter:
    """Wall time and MLX peak memory per phase; loads inside a phase are timed apart as `load`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self._loading = 0.0

    @contextlib.contextmanager
    def phase(self, name: str):
        mx.reset_peak_memory()
        self._loading = 0.0
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start - self._loading
            self.peak[name] = max(self.peak.get(name, 0), mx.get_peak_memory())

    @contextlib.contextmanager
    def loading(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self._loading += took
            self.seconds["load"] = self.seconds.get("load", 0.0) + took


@dataclass
class ModelFolders:
    """Converted MLX component folders (`mlx-acestep convert`)."""

    text_encoder: Path
    dit: Path
    vae: Path
    lm: Path | None = None  # the planner LM (optional: without it, no thinking)

    def __post_init__(self):
        for name in ("text_encoder", "dit", "vae"):
            setattr(self, name, Path(getattr(self, name)))
        if self.lm is not None:
            self.lm = Path(self.lm)


# role -> (component, parts to load); with keep_loaded the DiT is loaded whole once and shared.
_ROLES = {
    "text_encoder": ("text_encoder", None),
    "condition": ("dit", ("encoder",)),
    "condition_codes": ("dit", ("encoder", "tokenizer", "detokenizer")),  # planner codes -> hints
    "denoiser": ("dit", ("decoder", "null_condition_emb")),
    "vae": ("vae", ("decoder",)),
    "vae_encoder": ("vae", ("encoder", "decoder")),
}


def model_family(name: str, config: AceStepConfig) -> str:
    if config.is_turbo:
        return "turbo"
    return "sft" if "sft" in name.lower() else "base"


def target_frames(duration: float, hop: int = 1920) -> int:
    """Latent frames of a request: duration rounded to 0.1 s, `int(d * 48000) // 1920` (spec 5.2)."""
    return int(round(duration, 1) * SAMPLE_RATE) // hop


def resolve_seeds(seed: int | Sequence[int] | None, batch: int) -> list[int]:
    """One seed per item. None or -1: random; one int: seed, seed+1, ... (upstream draws fresh ones; this repeats)."""
    if seed is None or (isinstance(seed, int) and seed == -1):
        return [secrets.randbits(32) for _ in range(batch)]
    if isinstance(seed, (int, np.integer)):
        seeds = [int(seed) + i for i in range(batch)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != batch:
            raise AceStepError(f"got {len(seeds)} seeds for a batch of {batch}")
    if any(not 0 <= s < 2**63 for s in seeds):
        raise AceStepError(f"seeds must be between 0 and 2**63 - 1 (or -1 for random), got {seed}")
    return seeds


def initial_noise(seeds: Sequence[int], frames: int, channels: int, dtype: mx.Dtype) -> mx.array:
    """`[B, T, C]` standard normal noise in the model dtype, one generator per item (spec 5.5)."""
    return mx.concatenate([mx.random.normal((1, frames, channels), dtype=dtype, key=mx.random.key(s)) for s in seeds])


class ACEStep:
    """The text-to-music pipeline over converted folders."""

    def __init__(
        self,
        folders: ModelFolders,
        *,
        keep_loaded: bool = True,
        vae_chunk: int = 256,
        vae_overlap: int = 16,
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
        self.config = AceStepConfig.from_dict(fields)
        self.dtype = getattr(mx, fields.get("dtype", "float32"))
        self.family = model_family(self.name, self.config)
        self.tokenizer = PromptTokenizer(folders.text_encoder)
        self.silence_latent = load_silence_latent(folders.dit)
        self._loaded: dict[str, nn.Module] = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "ACE-Step/Ace-Step1.5",
        *,
        dit: str | None = None,
        dtype: str = "float32",
        quantize: str | None = None,
        q_group_size: int = 64,
        lm: str | None = "auto",
        lm_quantize: str | None = None,
        cache_dir: str | Path | None = None,
        reconvert: bool = False,
        log: Callable[[str], None] | None = None,
        **kwargs,
    ) -> "ACEStep":
        """Load from a converted MLX folder, a PyTorch checkpoint root (original or diffusers layout,
        converted once into the cache), a Hugging Face repo id (downloaded, converted, cached) or "tiny".

        `dit` picks the DiT folder (e.g. "acestep-v15-base"; default: the turbo model). `quantize` is
        None, "q8" or "q4" (the DiT's and text encoder's linear layers). `lm` picks the planner: "0.6B",
        "1.7B", "4B", "auto" (the default 1.7B if the model has it, else the one it has, else none) or None;
        `lm_quantize` None, "q8" or "q4" (its embedding and output head stay at 8 bits). Other keyword
        arguments go to the constructor (`keep_loaded`, `vae_chunk`, ...).
        """
        from ..hub import resolve_model

        folders = resolve_model(
            model, dit=dit, dtype=dtype, quantize=quantize, q_group_size=q_group_size, lm=lm, lm_quantize=lm_quantize,
            cache_dir=cache_dir, reconvert=reconvert, log=log,
        )
        return cls(folders, **kwargs)

    # -- modules -------------------------------------------------------------------------------

    def _module(self, role: str, meter: PhaseMeter) -> nn.Module:
        if role == "lm":
            if "lm" not in self._loaded:
                from .planner import Planner

                with meter.loading():
                    self._loaded["lm"] = Planner.load(self.folders.lm, int(np.prod(self.config.fsq_input_levels)))
            return self._loaded["lm"]
        component, parts = _ROLES[role]
        key = component if self.keep_loaded else role
        if key not in self._loaded:
            folder = getattr(self.folders, component)
            with meter.loading():
                self._loaded[key] = load_component(folder, component, None if self.keep_loaded else parts)
        return self._loaded[key]

    def _release(self, role: str) -> None:
        if not self.keep_loaded:
            self._loaded.pop(role, None)
            gc.collect()
        mx.clear_cache()

    # -- settings ------------------------------------------------------------------------------

    def sampler_settings(
        self, steps: int | None = None, shift: float | None = None, guidance: float | None = None, method: str = "ode"
    ) -> TurboSettings | BaseSettings:
        """The model family's defaults with the given overrides; turbo warns about what it ignores."""
        defaults = MODEL_DEFAULTS[self.family]
        if steps is not None and not 1 <= steps <= 200:
            raise AceStepError(f"steps must be between 1 and 200, got {steps}")
        if shift is not None and not 0 < shift <= 10:
            raise AceStepError(f"shift must be in (0, 10], got {shift}")
        if guidance is not None and not 0 <= guidance <= 30:
            raise AceStepError(f"guidance must be between 0 and 30, got {guidance}")
        if method not in ("ode", "sde"):
            raise AceStepError(f"unknown sampling method {method!r} (choose ode or sde)")
        if self.family == "turbo":
            if steps is not None and steps != defaults.steps:
                warnings.warn(f"turbo models always run their fixed 8-step schedule; steps={steps} is ignored", stacklevel=3)
            if guidance is not None and guidance != 1.0:
                warnings.warn(f"turbo models run without guidance (CFG); guidance={guidance} is ignored", stacklevel=3)
            if shift is not None and shift not in (1, 2, 3):
                warnings.warn(f"turbo models snap the shift to 1, 2 or 3; shift={shift} becomes {min((1, 2, 3), key=lambda s: abs(s - shift))}", stacklevel=3)
            return TurboSettings(shift=defaults.shift if shift is None else shift, method=method)
        return BaseSettings(
            steps=steps or defaults.steps,
            shift=defaults.shift if shift is None else shift,
            guidance_scale=defaults.guidance if guidance is None else guidance,
            method=method,
        )

    # -- generation ----------------------------------------------------------------------------

    def generate(
        self,
        caption: str,
        lyrics: str = "[Instrumental]",
        *,
        duration: float | None = None,
        seed: int | Sequence[int] | None = None,
        batch_size: int = 1,
        bpm: int | None = None,
        key: str | None = None,
        time_signature: int | str | None = None,
        language: str = "unknown",
        steps: int | None = None,
        shift: float | None = None,
        guidance: float | None = None,
        method: str = "ode",
        normalize: bool = True,
        thinking: bool | None = None,
        lm_cfg_scale: float = 2.0,
        lm_temperature: float = 0.85,
        lm_top_p: float = 0.9,
        negative_prompt: str = "NO USER INPUT",
        task: str = "text2music",
        src_audio: str | Path | np.ndarray | None = None,
        ref_audio: str | Path | np.ndarray | None = None,
        repaint_start: float = 0.0,
        repaint_end: float | None = None,
        track: str | None = None,
        tracks: Sequence[str] | None = None,
        cover_strength: float = 1.0,
        repaint_mode: str = "balanced",
        repaint_strength: float = 0.5,
        src_latents: np.ndarray | mx.array | None = None,
        ref_latents: np.ndarray | mx.array | None = None,
        callback: Callable[[Progress], bool | None] | None = None,
    ) -> GenerationResult:
        """Generate `batch_size` songs of `duration` seconds (10-600) from a caption and lyrics.

        `seed`: one int (item i uses seed + i), a list (one per item) or None (random). `steps`,
        `shift`, `guidance` default per model family (turbo ignores steps and guidance, with a warning).
        `thinking` (default: when the model has a planner LM) runs the 5 Hz planner first: it writes the
        metadata the user left out (bpm, key, time signature, language, a richer caption; the duration
        too when `duration` is None) and the audio codes the DiT then renders, as the reference does.
        `task` is text2music or an editing task (spec 7): cover, repaint (`repaint_start`/`repaint_end` in
        seconds), extract and lego (`track`), complete (`tracks`); these take `src_audio` (a file, or a 48 kHz
        `[samples, channels]` array) and render its length unless `duration` is given. extract, lego and
        complete need a base model. `ref_audio` (any task) lends its timbre. `src_latents` / `ref_latents`
        (`[T, 64]` VAE latents) stand in for already encoded audio. `cover_strength` below 1 conditions the
        last steps on the caption alone; `repaint_mode` (balanced with `repaint_strength`, conservative,
        aggressive) sets how strongly repaint/lego re-impose the source outside the region (spec 5.8).
        `duration` None: the source's length, else the planner's choice when thinking, else 30 s.
        `callback(Progress)` is called as work advances; returning False cancels (raises `Cancelled`).
        """
        job = Task(task, repaint_start, repaint_end, track, tracks, cover_strength, repaint_mode, repaint_strength)
        self._check_task(job, src_audio, src_latents, thinking)
        thinking = self.folders.lm is not None and not job.needs_source if thinking is None else thinking
        if thinking and self.folders.lm is None:
            raise AceStepError("thinking needs the planner LM and this model has none (load it with lm=..., or think=False)")
        if duration is None and not thinking and not job.needs_source:
            duration = 30.0
        if duration is not None and (not isinstance(duration, (int, float)) or not MIN_SECONDS <= duration <= MAX_SECONDS):
            raise AceStepError(f"duration must be between {MIN_SECONDS:g} and {MAX_SECONDS:g} seconds, got {duration}")
        if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
            raise AceStepError(f"batch size must be between 1 and {MAX_BATCH}, got {batch_size}")
        if bpm is not None and not 30 <= bpm <= 300:
            raise AceStepError(f"bpm must be between 30 and 300, got {bpm}")
        settings = self.sampler_settings(steps, shift, guidance, method)
        seeds = resolve_seeds(seed, batch_size)
        meter = PhaseMeter()
        source, source_wave, reference = self._encode_inputs(src_audio, src_latents, ref_audio, ref_latents, seeds[0], meter, callback)
        follow_source = source is not None and duration is None
        if follow_source:
            duration = source.shape[0] * 1920 / SAMPLE_RATE
        plans, codes = [], None
        if thinking:
            lm = dict(cfg_scale=lm_cfg_scale, temperature=lm_temperature, top_p=lm_top_p, negative=negative_prompt)
            plans = self._plan(caption, lyrics, duration, bpm, key, time_signature, language, seeds, lm, callback, meter)
            duration = float(plans[0].metadata["duration"]) if duration is None else duration
            items = [self._planned_item(p, caption, lyrics, duration, language) for p in plans]
            codes = np.stack([p.codes for p in plans])
        else:
            metas = Metas(duration=duration, bpm=bpm, timesignature=time_signature, keyscale=key)
            items = [ConditionInput(caption, lyrics, metas, language, job.instruction())] * batch_size
        if reference is not None:
            items = [dataclasses.replace(item, reference_latents=reference) for item in items]
        frames = max(MIN_FRAMES, source.shape[0] if follow_source else target_frames(duration))
        sources, edit, alt_tokens, region = None, None, None, None
        if source is not None:
            region = job.region(frames, source.shape[0])
            sources = [task_context(job, source, frames, self.silence_latent, region)] * batch_size
            edit, alt_items = self._edit_hooks(job, source, frames, batch_size, items, region)
            if alt_items is not None:
                alt_tokens = tokenize_items(self.tokenizer, alt_items)

        with meter.phase("text"):
            tokens = tokenize_items(self.tokenizer, items)
        noise = initial_noise(seeds, frames, self.config.audio_acoustic_hidden_dim, self.dtype)
        out = self.generate_from_tokens(
            tokens, frames, noise, settings, items=items, codes=codes, sources=sources, edit=edit, alt_tokens=alt_tokens,
            seed=seeds[0], callback=callback, meter=meter,
        )
        if follow_source:  # a source shorter than the 128-frame minimum keeps its own length
            frames = min(frames, source.shape[0])
        with meter.phase("post"):
            audio = self._postprocess(out.waveform[:, : frames * 1920], job, source_wave, region, normalize)
        return GenerationResult(
            audio=audio, sample_rate=SAMPLE_RATE, seeds=seeds, duration=frames * 1920 / SAMPLE_RATE,
            seconds=dict(meter.seconds), peak_memory=dict(meter.peak), latents=np.array(out.latents.astype(mx.float32)),
            metadata=[p.metadata for p in plans], codes=codes,
        )

    @staticmethod
    def _postprocess(waveform: mx.array, job: Task, source_wave, region, normalize: bool) -> np.ndarray:
        audio = peak_limit(np.array(waveform.astype(mx.float32)))  # as the reference right after the VAE: per item, only above 1
        if region and source_wave is not None and job.repaint_mode != "aggressive":
            xfade = repaint_settings(job.repaint_mode, job.repaint_strength)[2]
            audio = np.stack([splice(a, source_wave, *region, xfade) for a in audio])
        if normalize:  # the reference library's default: peak at -1 dBFS
            audio = np.stack([peak_normalize(a) for a in audio])
        return audio

    def _check_task(self, job: Task, src_audio, src_latents, thinking) -> None:
        given = src_audio is not None or src_latents is not None
        if job.needs_source and not given:
            raise AceStepError(f"the {job.name} task needs source audio (src_audio=..., --src-audio on the command line)")
        if not job.needs_source and given:
            raise AceStepError("source audio is for the editing tasks (cover, repaint, extract, lego, complete); choose one")
        if src_audio is not None and src_latents is not None:
            raise AceStepError("give src_audio or src_latents, not both")
        if job.name in BASE_ONLY and self.family != "base":
            raise AceStepError(
                f"the {job.name} task needs a base model (acestep-v15-base); this pipeline runs {self.name} ({self.family})"
            )
        if job.needs_source and thinking:
            raise AceStepError(f"thinking (the planner) is for text2music; the {job.name} task follows its source audio")

    @staticmethod
    def read_audio(audio: str | Path | np.ndarray, what: str = "source audio") -> np.ndarray:
        """A recording (file at any rate, or a 48 kHz `[samples, channels]` array) as 48 kHz stereo, 1-600 s."""
        from ..audio import load_audio

        if isinstance(audio, (str, Path)):
            wave = load_audio(audio)
        else:
            wave = np.asarray(audio, dtype=np.float32)
            if wave.ndim == 1:
                wave = wave[:, None]
            if wave.ndim != 2 or wave.shape[1] not in (1, 2):
                raise AceStepError(f"the {what} must be [samples, channels] with 1 or 2 channels, got {wave.shape}")
            wave = np.repeat(wave, 2, axis=1) if wave.shape[1] == 1 else wave
        return check_source(wave, what)

    def encode_audio(self, audio: str | Path | np.ndarray, seed: int = 0, meter: PhaseMeter | None = None,
                     what: str = "source audio", progress=None) -> mx.array:
        """A recording (see `read_audio`) -> VAE latents `[T, 64]`, a seeded draw from the posterior as the
        reference samples it (spec 5.10)."""
        return self._encode_wave(self.read_audio(audio, what), seed, meter or PhaseMeter(), progress)

    def _encode_wave(self, wave: np.ndarray, seed: int, meter: PhaseMeter, progress=None) -> mx.array:
        vae = self._module("vae_encoder", meter)
        mean, std = vae.encode_moments_chunked(mx.array(wave)[None], self.vae_chunk, self.vae_overlap, progress=progress)
        latents = vae.sample(mean, std, key=mx.random.key(seed))[0]
        mx.eval(latents)
        return latents

    def _encode_inputs(self, src_audio, src_latents, ref_audio, ref_latents, seed, meter, callback):
        """(source latents, source waveform, reference latents); the waveform only when the source is audio."""
        report = _reporter(callback)
        source = None if src_latents is None else _latents(src_latents, "source latents", self.config.audio_acoustic_hidden_dim)
        reference = None if ref_latents is None else _latents(ref_latents, "reference latents", self.config.audio_acoustic_hidden_dim)
        wave = None
        if src_audio is None and ref_audio is None:
            return source, wave, reference
        with meter.phase("encode"):
            if src_audio is not None:
                wave = self.read_audio(src_audio, "source audio")
                source = self._encode_wave(wave, seed, meter, lambda d, n: report("encode", d, n))
            if ref_audio is not None:
                reference = self.encode_audio(ref_audio, seed + 1, meter, "reference audio", lambda d, n: report("encode", d, n))
            self._release("vae_encoder")
        return source, wave, reference

    def _edit_hooks(self, job: Task, source: mx.array, frames: int, batch: int, items, region):
        """(sampler hooks, the items of cover strength's second condition) of an editing task."""
        if job.name == "cover" and job.cover_strength < 1.0:
            alt = [dataclasses.replace(item, instruction=instruction("text2music")) for item in items]
            return EditHooks(switch_fraction=job.cover_strength), alt
        if region is None:
            return None, None
        inject, ramp, _ = repaint_settings(job.repaint_mode, job.repaint_strength)
        clean = fit_frames(source, frames, self.silence_latent)
        inside = region_mask(frames, region)
        hooks = EditHooks(
            source=mx.broadcast_to(clean[None], (batch, *clean.shape)),
            keep=mx.broadcast_to((~inside)[None, :, None], (batch, frames, 1)),
            inject_fraction=inject,
            blend=mx.broadcast_to(mx.array(region_weights(frames, *region, ramp))[None, :, None], (batch, frames, 1)),
        )
        return hooks, None

    def _plan(self, caption, lyrics, duration, bpm, key, time_signature, language, seeds, lm, callback, meter) -> list:
        """One plan per item (its own seed). Without a duration the first item's choice is the batch's length."""
        report = _reporter(callback)
        plans = []
        with meter.phase("lm"):
            planner = self._module("lm", meter)
            for i, s in enumerate(seeds):
                progress = functools.partial(lambda i, done, n: report("lm", i * n + done, n * len(seeds)), i)
                plans.append(planner.plan(
                    caption, lyrics, duration=duration, bpm=bpm, keyscale=key, timesignature=time_signature,
                    language=language, seed=s, max_duration=self.max_seconds, callback=progress, **lm,
                ))
                if duration is None:
                    duration = float(plans[0].metadata["duration"])
            del planner
            self._release("lm")
        return plans

    @property
    def max_seconds(self) -> int:
        """The longest song this checkpoint renders: 600 s, or less if its silence latent is shorter."""
        return int(min(MAX_SECONDS, self.silence_latent.shape[1] * 1920 / SAMPLE_RATE))

    @staticmethod
    def _planned_item(plan, caption: str, lyrics: str, duration: float, language: str) -> ConditionInput:
        """The DiT's inputs after planning (spec 8.6): the LM's caption and metadata, the cover instruction
        (codes make the task a cover of the hints). The LM's language is used when the user gave none: the
        reference means to, but reads a misnamed key and keeps "unknown" (spec 8.6); this port does it."""
        meta = plan.metadata
        metas = Metas(duration=duration, bpm=meta.get("bpm"), timesignature=meta.get("timesignature"), keyscale=meta.get("keyscale"))
        if language in (None, "", "unknown"):
            language = meta.get("language") or "unknown"
        return ConditionInput(meta.get("caption") or caption, lyrics, metas, language, instruction=instruction("cover"))

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
        callback: Callable[[Progress], bool | None] | None = None,
        meter: PhaseMeter | None = None,
    ) -> Generated:
        """The pipeline after tokenization: text encoder -> condition -> sampler -> VAE (no post-processing).

        `noise` is the starting `[B, frames, 64]` latent noise. `items` carry reference latents (None:
        the silence latent's first `timbre_frames`, default the config's 750, as the reference).
        `codes` `[B, n]` are planner audio codes: their detokenized hints become the context (spec 5.3).
        `sources` are the editing tasks' (source latents `[frames, C]`, chunk mask `[frames]`, is_cover) per item;
        `edit` their sampler hooks, and `alt_tokens` the prompts of cover strength's second condition.
        """
        previous = mx.set_cache_limit(self.cache_limit)  # freed buffers kept for reuse, bounded
        try:
            return self._run(
                tokens, frames, noise, settings, items, codes, sources, edit, alt_tokens, timbre_frames, seed, callback,
                meter or PhaseMeter(),
            )
        finally:
            mx.set_cache_limit(previous)
            mx.clear_cache()

    def _run(self, tokens, frames, noise, settings, items, codes, sources, edit, alt_tokens, timbre_frames, seed, callback,
             meter) -> Generated:
        batch = tokens.text_ids.shape[0]
        if noise.shape != (batch, frames, self.config.audio_acoustic_hidden_dim):
            raise AceStepError(f"noise has shape {tuple(noise.shape)}, expected {(batch, frames, self.config.audio_acoustic_hidden_dim)}")
        if frames > self.silence_latent.shape[1]:
            raise AceStepError(
                f"{frames} latent frames exceed the checkpoint's silence latent ({self.silence_latent.shape[1]} frames = "
                f"{self.silence_latent.shape[1] * 1920 / SAMPLE_RATE:g} s)"
            )
        items = items or [ConditionInput("-")] * batch
        settings = settings or self.sampler_settings()
        timbre_frames = timbre_frames or self.config.timbre_fix_frame
        report = _reporter(callback)

        report("text", 0, 1)
        with meter.phase("text"):
            text_encoder = self._module("text_encoder", meter)
            text_hidden = text_encoder(mx.array(tokens.text_ids))  # no mask: causal over the right-padded batch, as the reference
            lyric_hidden = text_encoder.embed(mx.array(tokens.lyric_ids))
            alt_hidden = None if alt_tokens is None else text_encoder(mx.array(alt_tokens.text_ids))
            mx.eval(text_hidden, lyric_hidden, alt_hidden)
            del text_encoder
            self._release("text_encoder")
        report("text", 1, 1)

        report("condition", 0, 1)
        with meter.phase("condition"):
            covers = [bool(c) for _, _, c in sources] if sources is not None else [codes is not None] * batch
            model = self._module("condition_codes" if any(covers) else "condition", meter)
            dtype = model.dtype
            refer, order = reference_clips(items, self.silence_latent, timbre_frames, dtype, seed)
            states, _ = model.encoder(
                text_hidden.astype(dtype), mx.array(tokens.text_mask), lyric_hidden.astype(dtype), mx.array(tokens.lyric_mask),
                refer, mx.array(order),
            )
            masks, hints = mx.ones((batch, frames)), None
            if sources is not None:
                if len(sources) != batch or any(s.shape[0] != frames or m.shape[0] != frames for s, m, _ in sources):
                    raise AceStepError(f"sources must hold {batch} items of {frames} frames")
                src = mx.stack([s for s, _, _ in sources]).astype(dtype)
                masks = mx.stack([m for _, m, _ in sources])
            elif codes is None:
                src = mx.broadcast_to(self.silence_latent[:, :frames].astype(dtype), (batch, frames, self.silence_latent.shape[2]))
            else:
                src = hints = self._hints(model, codes, batch, frames, dtype)
            context = model.context_latents(src, masks, mx.array(covers), self.silence_latent, hints=hints)
            if alt_hidden is not None:  # cover strength: the text2music condition the last steps switch to
                alt_states, _ = model.encoder(
                    alt_hidden.astype(dtype), mx.array(alt_tokens.text_mask), lyric_hidden.astype(dtype),
                    mx.array(tokens.lyric_mask), refer, mx.array(order),
                )
                silence = mx.broadcast_to(self.silence_latent[:, :frames].astype(dtype), src.shape)
                alt_context = model.context_latents(silence, masks, mx.zeros((batch,), mx.bool_), self.silence_latent)
                edit = dataclasses.replace(edit, switch_to=(alt_states, alt_context))
                mx.eval(alt_states, alt_context)
            mx.eval(states, context)
            del model
            self._release("condition")
        report("condition", 1, 1)

        with meter.phase("dit"):
            model = self._module("denoiser", meter)
            steps_done = functools.partial(report, "dit")
            turbo = isinstance(settings, TurboSettings)
            report("dit", 0, len(turbo_timesteps(settings.shift, settings.timesteps)) if turbo else settings.steps)
            if turbo:
                latents = sample_turbo(model.decoder, states, context, settings, noise=noise, callback=steps_done, edit=edit)
            else:
                latents = sample_base(
                    model.decoder, states, context, model.null_condition_emb, settings, noise=noise, callback=steps_done, edit=edit
                )
            mx.eval(latents)
            del model, states, context
            self._release("denoiser")

        with meter.phase("vae"):
            vae = self._module("vae", meter)
            waveform = vae.decode_chunked(
                latents.astype(vae.dtype), self.vae_chunk, self.vae_overlap, progress=lambda d, n: report("vae", d, n)
            )
            mx.eval(waveform)
            del vae
            self._release("vae")
        return Generated(text_hidden, lyric_hidden, latents, waveform)

    def _hints(self, model, codes: np.ndarray, batch: int, frames: int, dtype: mx.Dtype) -> mx.array:
        """Codes `[B, n]` -> 25 Hz hints `[B, frames, C]`: detokenized, padded with the silence latent's first
        frames (or cropped) to the target length (spec 5.3)."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != batch or codes.shape[1] < 1:
            raise AceStepError(f"codes have shape {codes.shape}, expected [{batch}, n]")
        hints = model.codes_to_hints(mx.array(codes.astype(np.int32))).astype(dtype)
        short = frames - hints.shape[1]
        if short > 0:
            pad = self.silence_latent[:, :short].astype(dtype)
            hints = mx.concatenate([hints, mx.broadcast_to(pad, (hints.shape[0], short, pad.shape[2]))], axis=1)
        return hints[:, :frames]


def _latents(x, what: str, channels: int) -> mx.array:
    x = mx.array(np.asarray(x, dtype=np.float32)) if not isinstance(x, mx.array) else x
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2 or x.shape[1] != channels:
        raise AceStepError(f"{what} must be [frames, {channels}], got {tuple(x.shape)}")
    return x


def _reporter(callback: Callable[[Progress], bool | None] | None) -> Callable[[str, int, int], None]:
    def report(phase: str, done: int, total: int) -> None:
        if callback is not None and callback(Progress(phase, done, total)) is False:
            raise Cancelled(f"generation cancelled during {phase}")

    return report


