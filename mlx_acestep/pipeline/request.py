"""One generation request, validated once: what the CLI, the Python API (and a server) all build.

`GenerationRequest(...)` checks everything that does not depend on the model
(types, ranges, the task and its inputs, audio files) when it is made, so a bad
request fails before anything loads. `ACEStep.generate` then resolves what does
depend on the model with `thinking_for`, `duration_for`, `check_model` and
`sampler_settings`: whether the planner runs, the duration, base-only tasks, the
sampler defaults of the model family.

What "no duration" means is decided here, once: an editing task renders its
source's length; with the planner on (thinking), the planner chooses; otherwise
`DEFAULT_SECONDS` (30 s).

Errors are `RequestError`s: they name the field, and the command line shows its
flag instead (`--duration must be ...` where Python says `duration must be ...`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..conditioning.sources import audio_file_seconds, source_frames
from ..conditioning.tasks import Task
from ..diffusion.dcw import DCW, dcw_for
from ..diffusion.flow_edit import FlowEditSettings
from ..diffusion.sampler import TURBO_STEPS, BaseSettings, TurboSettings
from ..diffusion.schedules import turbo_steps
from ..errors import RequestError
from ..fields import Field, Fields
from ..limits import (
    BPM,
    DCW_SCALER,
    DEFAULT_DCW_HIGH_SCALER,
    DEFAULT_DCW_MODE,
    DEFAULT_DCW_SCALER,
    DEFAULT_DCW_WAVELET,
    DEFAULT_LM_CFG_SCALE,
    DEFAULT_LM_TEMPERATURE,
    DEFAULT_LM_TOP_P,
    DEFAULT_SECONDS,
    FLOW_EDIT_N_AVG,
    FLOW_EDIT_WINDOW,
    GUIDANCE,
    LM_CFG_SCALE,
    LM_TEMPERATURE,
    LM_TOP_P,
    REPAINT_CROSSFADE_FRAMES,
    REPAINT_CROSSFADE_SECONDS,
    SECONDS,
    SHIFT,
    STEPS,
    VELOCITY_EMA_FACTOR,
    VELOCITY_NORM_THRESHOLD,
)
from ..names import (
    BASE_DIT,
    BASE_ONLY,
    DCW_MODES,
    DCW_WAVELETS,
    INSTRUMENTAL,
    LM_CODES_PROMPTS,
    NEGATIVE_DEFAULT,
    SAMPLING_METHODS,
    SOLVERS,
)
from .custom import FIELDS as CUSTOM_FIELDS
from .custom import check_custom, check_planned_length, check_schedule, codes_seconds, custom_settings
from .flow_edit import FIELDS as FLOW_EDIT_FIELDS
from .flow_edit import check_flow_edit, flow_edit_settings
from .loras import request_loras
from .seeds import BATCH, check_seeds, resolve_seeds
from .song_metadata import KEY, normalize_key, normalize_time_signature

__all__ = [
    "GenerationRequest",
    "RequestError",
    "normalize_key",
    "normalize_time_signature",
    "resolve_seeds",
    "sampler_settings",
]


@dataclass(frozen=True)
class SamplerDefaults:
    steps: int
    shift: float
    guidance: float


# Per model family, as the reference's UI runs them (spec 9.2): turbo 8 steps without CFG; base and SFT use APG
# guidance 7.0. Shift 3.0 is the UI/REST default for all.
MODEL_DEFAULTS = {
    "turbo": SamplerDefaults(steps=TURBO_STEPS, shift=3.0, guidance=1.0),
    "base": SamplerDefaults(steps=32, shift=3.0, guidance=7.0),
    "sft": SamplerDefaults(steps=50, shift=3.0, guidance=7.0),
}


# The request's value rules, once: the CLI names a field's flag from its name, a server its JSON field.
REQUEST = Fields(
    Field("caption", "text"),
    Field("empty_caption", "bool"),
    Field("instruction", "text", optional=True),
    Field("global_caption", "text"),
    Field("lyrics", "text"),
    Field("duration", "number", *SECONDS, optional=True, unit="seconds"),
    BATCH,
    Field("bpm", "integer", *BPM, optional=True),
    KEY,
    Field("language", "text"),
    Field("steps", "integer", *STEPS, optional=True),
    Field("shift", "number", *SHIFT, low_open=True, optional=True),
    Field("guidance", "number", *GUIDANCE, optional=True),
    Field("method", "choice", choices=SAMPLING_METHODS, what="sampling method"),
    Field("normalize", "bool"),
    Field("thinking", "bool", optional=True),
    Field("lm_cfg_scale", "number", *LM_CFG_SCALE, low_open=True),
    Field("lm_temperature", "number", *LM_TEMPERATURE),
    Field("lm_top_p", "number", *LM_TOP_P, low_open=True),
    Field("negative_prompt", "text"),
    Field("lm_codes_prompt", "choice", choices=LM_CODES_PROMPTS, what="codes prompt"),
    Field("retake_variance", "number", 0.0, 1.0),
    Field("sampler", "choice", choices=SOLVERS, what="sampler"),
    Field("velocity_norm_threshold", "number", *VELOCITY_NORM_THRESHOLD),
    Field("velocity_ema_factor", "number", *VELOCITY_EMA_FACTOR),
    Field("dcw", "bool", optional=True),
    Field("dcw_mode", "choice", choices=DCW_MODES, what="DCW mode"),
    Field("dcw_scaler", "number", *DCW_SCALER),
    Field("dcw_high_scaler", "number", *DCW_SCALER),
    Field("dcw_wavelet", "choice", choices=DCW_WAVELETS, what="DCW wavelet"),
    Field("repaint_latent_crossfade_frames", "integer", *REPAINT_CROSSFADE_FRAMES, optional=True),
    Field("repaint_wav_crossfade_sec", "number", *REPAINT_CROSSFADE_SECONDS, optional=True, unit="seconds"),
    *FLOW_EDIT_FIELDS,
    *CUSTOM_FIELDS,
    Field("sample", "text", optional=True),
    Field("instrumental", "bool"),
    Field("format", "bool"),
    # The task checks these against the source and each other (conditioning/tasks.py); here only that they are numbers.
    *(
        Field(name, "number", optional=True)
        for name in ("repaint_start", "repaint_end", "cover_strength", "repaint_strength", "cover_noise_strength")
    ),
    error=RequestError,
)
_FIRST = ("caption", "empty_caption", "instruction", "lyrics", "duration", "batch_size", "bpm", "key")
_LATER = tuple(f.name for f in REQUEST if f.name not in _FIRST)


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs to know; see the module docstring and `ACEStep.generate`."""

    caption: str = ""  # may be left out when `sample` writes it, or given empty with `empty_caption`
    empty_caption: bool = False  # encode an empty caption as it is, as upstream's REST does with `{}`; else refused
    lyrics: str = INSTRUMENTAL
    duration: float | None = None  # None: the source's length, the planner's choice, or DEFAULT_SECONDS
    seed: int | Sequence[int] | None = None  # item i uses seed + i; a list gives one per item; None: random
    batch_size: int = 1
    bpm: int | None = None
    key: str | None = None
    time_signature: int | str | None = None
    language: str = "unknown"
    steps: int | None = None  # None: the model family's default
    shift: float | None = None
    guidance: float | None = None
    method: str = "ode"
    normalize: bool = True
    thinking: bool | None = None  # None: on when the model has a planner LM and the task is text2music
    lm_cfg_scale: float = DEFAULT_LM_CFG_SCALE
    lm_temperature: float = DEFAULT_LM_TEMPERATURE
    lm_top_p: float = DEFAULT_LM_TOP_P
    negative_prompt: str = NEGATIVE_DEFAULT
    lm_codes_prompt: str = "current"  # the planner's codes-phase prompt: upstream's today; february for 0.4's runs
    retake_seed: int | Sequence[int] | None = None  # a second noise mixed in (as `seed`; None: random)
    retake_variance: float = 0.0  # how much of it: 0 the song itself, 1 the retake seed's (upstream's retake)
    sampler: str = "euler"  # or heun (two DiT evaluations a step; the ODE only)
    velocity_norm_threshold: float = 0.0  # upstream's clamp ||v|| <= k ||x|| (0: off)
    velocity_ema_factor: float = 0.0  # upstream's velocity EMA (0: off)
    dcw: bool | None = None  # upstream's wavelet correction; None: on for turbo, off for base / SFT (as upstream)
    dcw_mode: str = DEFAULT_DCW_MODE
    dcw_scaler: float = DEFAULT_DCW_SCALER
    dcw_high_scaler: float = DEFAULT_DCW_HIGH_SCALER
    dcw_wavelet: str = DEFAULT_DCW_WAVELET
    flow_edit: bool = False  # move src_audio's song toward the caption / lyrics, keeping its structure (flow_edit.py)
    flow_edit_source_caption: str | None = None  # what the song is now; None: the caption
    flow_edit_source_lyrics: str | None = None  # None: the lyrics
    flow_edit_n_min: float = FLOW_EDIT_WINDOW[0]  # the steps that edit, as shares of the schedule
    flow_edit_n_max: float = FLOW_EDIT_WINDOW[1]
    flow_edit_n_avg: int = FLOW_EDIT_N_AVG[0]  # forward-noise draws averaged each step of the window
    task: str = "text2music"
    src_audio: str | Path | np.ndarray | None = None  # a file, or a 48 kHz [samples, channels] array
    ref_audio: str | Path | np.ndarray | None = None
    repaint_start: float = 0.0
    repaint_end: float | None = None
    track: str | None = None
    tracks: Sequence[str] | None = None
    instruction: str | None = None  # the DiT's instruction line, as upstream's REST `instruction`; None: the task's
    global_caption: str = ""  # the whole song's caption, read by upstream's SFT-stems lego checkpoint only
    cover_strength: float = 1.0
    repaint_mode: str = "balanced"
    repaint_strength: float = 0.5
    repaint_latent_crossfade_frames: int | None = None  # repaint / lego: the latent blend's ramp; None: the mode's
    repaint_wav_crossfade_sec: float | None = None  # repaint / lego: the waveform splice's cross-fade; None: the mode's
    cover_noise_strength: float = 0.0  # cover: start from the source noised to about 1 - this (0: from noise)
    chunk_mask_mode: str = "auto"  # repaint / lego: auto (upstream's default) or explicit, the region marked 1
    guidance_kind: str = "apg"  # base / SFT: apg, adg (upstream's use_adg) or cfg; the rest of custom.py's:
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # the share of the schedule (from noise) that is guided
    timesteps: Sequence[float] | None = None  # a custom schedule (turbo: snapped to its tables; base: verbatim)
    lm_top_k: int = 0  # the planner keeps its k likeliest tokens (0: all)
    audio_codes: str | Sequence[int] | None = None  # 5 Hz codes the DiT renders (`<|audio_code_N|>` text)
    src_latents: object = None  # [T, 64] VAE latents standing in for src_audio
    ref_latents: object = None
    loras: Sequence = ()  # adapters for this call only: paths, or (path, scale) pairs (on top of pipe.load_lora's)
    sample: str | None = None  # upstream's sample_mode: the planner writes the song from this sentence first
    instrumental: bool = False  # with sample: a song without vocals
    format: bool = False  # upstream's use_format: the planner tidies the caption and lyrics first
    job: Task = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        REQUEST.check_into(self, ("caption", "empty_caption", "sample", "instruction"))
        if not self.caption.strip() and self.sample is None and not self.empty_caption:
            raise RequestError("caption", "the caption is empty; describe the music (genre, mood, instruments)")
        if self.caption.strip() and self.sample is not None:
            raise RequestError("sample", "@name@ writes the caption: give a caption or a sample, not both")
        REQUEST.check_into(self, ("lyrics", "duration", "batch_size"))
        check_seeds(self.seed, self.batch_size)
        check_seeds(self.retake_seed, self.batch_size, "retake_seed")
        REQUEST.check_into(self, ("bpm",))
        object.__setattr__(self, "key", normalize_key(self.key))
        object.__setattr__(self, "time_signature", normalize_time_signature(self.time_signature))
        REQUEST.check_into(self, _LATER)
        if self.instrumental and self.sample is None:
            raise RequestError("instrumental", "@name@ goes with @sample@ (without it, leave the lyrics out)")
        if self.sampler == "heun" and self.method != "ode":
            raise RequestError("sampler", "the heun @name@ runs the ODE only (method ode)")
        object.__setattr__(self, "loras", request_loras(self.loras))
        tracks = None if self.tracks is None else [self.tracks] if isinstance(self.tracks, str) else self.tracks
        if tracks is not None and not (isinstance(tracks, (list, tuple)) and all(isinstance(t, str) for t in tracks)):
            raise RequestError("tracks", f"@name@ must be a track name or a list of them, got {self.tracks!r}")
        tracks = None if tracks is None else list(tracks)
        object.__setattr__(self, "tracks", tracks)
        region = (self.repaint_start, self.repaint_end, self.track, tracks, self.cover_strength)
        edit = (self.repaint_mode, self.repaint_strength, self.cover_noise_strength, self.chunk_mask_mode)
        edit += (self.repaint_latent_crossfade_frames, self.repaint_wav_crossfade_sec)
        job = Task(self.task, *region, *edit)
        object.__setattr__(self, "job", job)
        check_flow_edit(self)
        check_custom(self)
        self._check_task_inputs()

    def _check_task_inputs(self) -> None:
        job = self.job
        given = self.src_audio is not None or self.src_latents is not None
        if job.needs_source and not given:
            raise RequestError("src_audio", f"the {job.name} task needs source audio (@name@)")
        if not self.uses_source and given:
            raise RequestError("src_audio", "@name@ is for the editing tasks (choose one with @task@) and flow-edit")
        if self.src_audio is not None and self.src_latents is not None:
            raise RequestError("src_latents", "give src_audio or src_latents, not both")
        if self.ref_audio is not None and self.ref_latents is not None:
            raise RequestError("ref_latents", "give ref_audio or ref_latents, not both")
        if job.needs_source and self.thinking:
            raise RequestError("thinking", f"@name@ is for text2music; the {job.name} task follows its source audio")
        for name in ("src_audio", "ref_audio"):
            path = getattr(self, name)
            if isinstance(path, (str, Path)):
                audio_file_seconds(path, name)
        frames = source_frames(self.src_audio, self.src_latents)
        if frames is not None and job.has_region:  # the region against the source, before anything is encoded
            job.region(frames, frames)

    def replace(self, **changes) -> GenerationRequest:
        return dataclasses.replace(self, **changes)

    @property
    def uses_source(self) -> bool:
        """Whether the run starts from src_audio: the editing tasks, and flow-edit (text2music's too)."""
        return self.job.needs_source or self.flow_edit

    @property
    def required_dit(self) -> str | None:
        """The DiT a task is trained into, when only one is: extract, lego and complete need the base model."""
        return BASE_DIT if self.task in BASE_ONLY else None

    # -- what depends on the model ----------------------------------------------------------------

    def notices(self, thinking: bool | None = None) -> list[str]:
        """What the request does that its user may not expect (the pipeline warns with each); `thinking`: whether the
        planner runs, when the model decides it."""
        out = []
        coded = self.audio_codes is not None or (self.thinking if thinking is None else thinking)
        if coded and self.task == "text2music" and self.instruction is not None:
            # upstream turns text2music with codes into a cover, instruction included (generate_music_request.py:47-56)
            out.append(
                "the instruction was not used: with audio codes (the planner's or given) text2music renders a cover "
                "of them, with cover's instruction (as upstream)"
            )
        if self.audio_codes is not None and self.duration not in (None, codes_seconds(self.audio_codes)):
            out.append(f"the song follows its audio codes: {codes_seconds(self.audio_codes):g} s, not the duration")
        if self.retake_seed is not None and not self.retake_variance and not self.flow_edit:
            out.append("a retake seed without a retake variance changes nothing (give retake_variance above 0)")
        if self.task in ("extract", "lego") and not self.track and self.instruction is None:
            from ..conditioning.prompts import instruction

            out.append(f"no track given: {self.task} uses the generic instruction {instruction(self.task)!r}")
        return out

    def thinking_for(self, has_planner: bool) -> bool:
        if self.thinking is None:
            return has_planner and not self.uses_source and self.audio_codes is None
        if self.thinking and not has_planner:
            raise RequestError(
                "thinking",
                "@name@ needs the planner LM and this model has none (load it with lm=..., or turn thinking off)",
            )
        return self.thinking

    def duration_for(self, thinking: bool) -> float | None:
        """The requested length, or what "none" means: None for the source's length or the planner's choice."""
        if self.audio_codes is not None:  # upstream renders the codes' length, whatever the duration says
            return codes_seconds(self.audio_codes)
        if self.duration is not None:
            if thinking:
                check_planned_length(self.duration)
            return float(self.duration)
        if self.uses_source or thinking:
            return None
        return DEFAULT_SECONDS

    def check_model(self, family: str, name: str) -> None:
        """What the model cannot run, refused before any work (the CLI, the library and the server call it)."""
        check_schedule(self, family)
        if self.task in BASE_ONLY and family != "base":
            raise RequestError(
                "task", f"the {self.task} task needs a base model ({BASE_DIT}); this pipeline runs {name} ({family})"
            )

    def sampler_settings(self, family: str, stacklevel: int = 2) -> TurboSettings | BaseSettings | FlowEditSettings:
        if self.flow_edit:
            return flow_edit_settings(self, family, MODEL_DEFAULTS[family], stacklevel + 1)
        dcw = dcw_for(
            family,
            self.dcw,
            mode=self.dcw_mode,
            scaler=self.dcw_scaler,
            high_scaler=self.dcw_high_scaler,
            wavelet=self.dcw_wavelet,
        )
        settings = sampler_settings(
            family, self.steps, self.shift, self.guidance, self.method, stacklevel + 1, dcw or False
        )
        return dataclasses.replace(
            custom_settings(self, settings),
            solver=self.sampler,
            velocity_norm_threshold=self.velocity_norm_threshold,
            velocity_ema_factor=self.velocity_ema_factor,
        )


def sampler_settings(
    family: str,
    steps: int | None = None,
    shift: float | None = None,
    guidance: float | None = None,
    method: str = "ode",
    stacklevel: int = 2,
    dcw: DCW | bool | None = None,
) -> TurboSettings | BaseSettings:
    """The model family's defaults with the given overrides; turbo warns about what it ignores (the warnings point
    `stacklevel` frames up: at the caller's line). `dcw`: None the family's default (`dcw_for`), False off, True
    upstream's default correction, or a `DCW`."""
    defaults = MODEL_DEFAULTS[family]
    dcw = dcw if isinstance(dcw, DCW) else dcw_for(family, dcw)
    for name, value in (("steps", steps), ("shift", shift), ("guidance", guidance), ("method", method)):
        REQUEST.check(name, value)
    if family == "turbo":
        if guidance is not None and guidance != 1.0:
            warnings.warn(
                f"turbo models run without guidance (CFG); guidance={guidance} is ignored", stacklevel=stacklevel
            )
        # upstream always passes its steps (8 by default), so turbo runs `1 - i/N` at the exact shift; at a shift of
        # 1, 2 or 3 and 8 steps that is the February table exactly (older sidecars replay so: metadata.older_settings)
        steps = turbo_steps(steps)
        return TurboSettings(shift=defaults.shift if shift is None else shift, steps=steps, method=method, dcw=dcw)
    return BaseSettings(
        steps=steps or defaults.steps,
        shift=defaults.shift if shift is None else shift,
        guidance_scale=defaults.guidance if guidance is None else guidance,
        method=method,
        dcw=dcw,
    )
