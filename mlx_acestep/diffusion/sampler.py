"""The samplers' settings and the two entry points over the one loop (`loop.py`).

- Turbo: eight steps from a fixed table chosen by shift, or custom timesteps snapped to the tables' values; ODE
  (Euler) or SDE (re-noise); no CFG.
- Base / SFT: the shifted linspace, CFG against the null condition embedding inside a guidance interval, with APG
  (default), ADG or plain CFG.
- Both: upstream's Heun and velocity clamp / EMA (`SolverOptions`). As upstream, base / SFT's Heun also takes the
  last step (turbo's jumps to x0) and guides its second evaluation with `Guidance.corrector`.

`sample_turbo` / `sample_base` run the whole loop (evaluating each step, calling `callback(done, total)`); callers
that want each step themselves use `run_steps` (or `loop.denoise`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mlx.core as mx

from .dcw import DCW
from .edits import EditHooks
from .flow import FlowMatching, StepNoise
from .flow_edit import FlowEditSettings
from .guidance import ADG_ANGLE_CLIP, make_guidance
from .loop import Step, Velocity, VelocityFilter, denoise
from .schedules import (  # noqa: F401  (the names callers know the schedules by)
    TURBO_SHIFTS,
    TURBO_STEPS,
    TURBO_TABLES,
    VALID_TIMESTEPS,
    base_timesteps,
    nearest_turbo_shift,
    torch_linspace,
    turbo_timesteps,
)

if TYPE_CHECKING:
    from ..models.dit.decoder import AceStepDiTModel


@dataclass(kw_only=True)
class SolverOptions:
    """Upstream's newer sampler options, all off by default, on every model family: heun (two evaluations a step)
    and the velocity stabilisers, the norm clamp and the EMA (applied to each evaluation after its guidance)."""

    solver: str = "euler"
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0

    def stabiliser(self) -> VelocityFilter:
        return VelocityFilter(self.velocity_norm_threshold, self.velocity_ema_factor)


@dataclass
class TurboSettings(SolverOptions):
    shift: float = 3.0
    timesteps: list[float] | None = None
    steps: int | None = None  # None: the fixed 8-step table of the nearest shift; N: upstream's variable schedule
    method: str = "ode"  # ode | sde
    # The reference builds the schedule in the model dtype (bf16 rounds 0.954545 to 0.953125); None = model dtype.
    schedule_dtype: mx.Dtype | None = None
    dcw: DCW | None = None  # upstream's wavelet correction after each step (dcw.py); None: off

    def flow(self, dtype: mx.Dtype) -> FlowMatching:
        flow = FlowMatching.turbo(self.shift, self.timesteps, self.method, self.schedule_dtype or dtype, self.steps)
        return dataclasses.replace(flow, solver=self.solver)

    def new_guidance(self):
        return make_guidance("cfg", 1.0)  # turbo runs without guidance


@dataclass
class BaseSettings(SolverOptions):
    steps: int = 32
    shift: float = 1.0
    guidance_scale: float = 7.0
    guidance: str = "apg"  # apg | adg | cfg: the kind, made into a guidance object per run
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    method: str = "ode"
    timesteps: list[float] | None = None
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 2.5
    adg_angle_clip: float = ADG_ANGLE_CLIP
    schedule_dtype: mx.Dtype | None = None  # as TurboSettings
    dcw: DCW | None = None  # as TurboSettings

    def flow(self, dtype: mx.Dtype) -> FlowMatching:
        flow = FlowMatching.shifted(self.steps, self.shift, self.timesteps, self.method, self.schedule_dtype or dtype)
        return dataclasses.replace(flow, solver=self.solver)

    def new_guidance(self):
        """A fresh guidance object for one run (APG's momentum is per run)."""
        return make_guidance(
            self.guidance,
            self.guidance_scale,
            self.cfg_interval,
            self.apg_momentum,
            self.apg_norm_threshold,
            self.adg_angle_clip,
        )


def steps_of(settings: TurboSettings | BaseSettings | FlowEditSettings) -> int:
    """How many steps (progress units) a sampler run takes."""
    if isinstance(settings, FlowEditSettings):
        return settings.steps_run
    if isinstance(settings, TurboSettings):
        return len(turbo_timesteps(settings.shift, settings.timesteps, settings.steps))
    return settings.steps


@dataclass
class Trace:
    """Per-step decoder inputs and outputs, for localising a mismatch (like the fixtures' debug_* tensors)."""

    xt: list = field(default_factory=list)
    t: list = field(default_factory=list)
    velocity: list = field(default_factory=list)


def run_steps(
    decoder: AceStepDiTModel,
    condition: tuple[mx.array, mx.array],
    settings: TurboSettings | BaseSettings,
    noise: mx.array | None = None,
    *,
    null: mx.array | None = None,
    renoise: list[mx.array] | None = None,
    key: mx.array | None = None,
    edit: EditHooks | None = None,
) -> Iterator[Step]:
    """The denoising steps of one run (a generator: nothing is evaluated until the caller does)."""
    states, context = condition
    dtype = decoder.scale_shift_table.dtype
    flow = settings.flow(dtype)
    shape = (context.shape[0], context.shape[1], decoder.cfg.audio_acoustic_hidden_dim)
    if renoise is not None and flow.method == "sde" and len(renoise) < flow.draws:
        from ..errors import AceStepError

        raise AceStepError(f"SDE needs {flow.draws} re-noise draws, got {len(renoise)}")
    start = StepNoise(shape, dtype, flow.steps, key, noise, renoise)
    flow, x = edit.start(flow, start.initial) if edit is not None else (flow, None)
    switch = edit.switch_step(flow.steps) if edit is not None else None  # of the steps left to run, as upstream
    velocity = Velocity(
        decoder,
        condition,
        guidance=settings.new_guidance(),
        null=null,
        switch_to=edit and edit.switch_to,
        switch_step=switch,
        stabiliser=settings.stabiliser(),
    )
    # upstream's order: the wavelet correction, then repaint's injection (and its blend at the end)
    corrections = tuple(c for c in (settings.dcw, edit) if c is not None)
    return denoise(velocity, flow, start, corrections, x)


def run_all(steps: Iterator[Step], callback=None, trace: Trace | None = None) -> mx.array:
    """Drive a run to its end, evaluating each step (the samplers' memory stays that of one step)."""
    step = None
    for step in steps:
        mx.eval(step.x)
        if trace is not None:
            trace.xt.append(step.x_in), trace.t.append(step.t), trace.velocity.append(step.velocity)
        if callback is not None:
            callback(step.k + 1, step.total)
    return step.x


def sample_turbo(
    decoder: AceStepDiTModel,
    encoder_hidden_states: mx.array,
    context: mx.array,
    settings: TurboSettings | None = None,
    noise: mx.array | None = None,
    renoise: list[mx.array] | None = None,
    key: mx.array | None = None,
    callback: Callable[[int, int], None] | None = None,
    trace: Trace | None = None,
    edit: EditHooks | None = None,
) -> mx.array:
    """Turbo sampling -> x0 `[B, T, 64]`. `noise` (else drawn from `key`) starts it; SDE draws `renoise` per step."""
    steps = run_steps(
        decoder,
        (encoder_hidden_states, context),
        settings or TurboSettings(),
        noise,
        renoise=renoise,
        key=key,
        edit=edit,
    )
    return run_all(steps, callback, trace)


def sample_base(
    decoder: AceStepDiTModel,
    encoder_hidden_states: mx.array,
    context: mx.array,
    null_condition_emb: mx.array,
    settings: BaseSettings | None = None,
    noise: mx.array | None = None,
    renoise: list[mx.array] | None = None,
    key: mx.array | None = None,
    callback: Callable[[int, int], None] | None = None,
    trace: Trace | None = None,
    edit: EditHooks | None = None,
) -> mx.array:
    """Base/SFT sampling with CFG against `null_condition_emb` broadcast over the condition -> x0."""
    steps = run_steps(
        decoder,
        (encoder_hidden_states, context),
        settings or BaseSettings(),
        noise,
        null=null_condition_emb,
        renoise=renoise,
        key=key,
        edit=edit,
    )
    return run_all(steps, callback, trace)
