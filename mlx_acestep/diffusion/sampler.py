"""Flow-matching samplers of ACE-Step 1.5 (spec 5.6-5.7).

Convention: x_t = t * noise + (1 - t) * x0 and the DiT predicts v = noise - x0.

- Turbo: eight steps from a fixed table chosen by shift (1, 2 or 3), or custom
  timesteps snapped to the tables' values; ODE (Euler) or SDE (re-noise); no CFG.
- Base / SFT: linspace(1, 0, N+1) shifted by s*t / (1 + (s-1)*t), CFG against the
  null condition embedding inside a guidance interval, with APG (default) or ADG.

The reference builds its schedule in the model dtype and does the APG projection
and the ADG angle in float64. Metal has no float64, so both run in float32 here
(the ADG angle through a formula that stays accurate for small angles); the
difference is reported by the parity tests. Schedules are computed on the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from ..errors import AceStepError

if TYPE_CHECKING:
    from ..models.dit.decoder import AceStepDiTModel

TURBO_STEPS = 8
TURBO_SHIFTS = (1, 2, 3)


def _turbo_table(shift: int) -> list[float]:
    taus = [1 - k / TURBO_STEPS for k in range(TURBO_STEPS)]
    return [shift * tau / (1 + (shift - 1) * tau) for tau in taus]


TURBO_TABLES = {s: _turbo_table(s) for s in TURBO_SHIFTS}
VALID_TIMESTEPS = sorted({round(t, 12) for table in TURBO_TABLES.values() for t in table}, reverse=True)


def nearest_turbo_shift(shift: float) -> int:
    """The turbo table a shift picks: the nearest of 1, 2 and 3."""
    return min(TURBO_SHIFTS, key=lambda s: abs(s - shift))


def turbo_timesteps(shift: float = 3.0, timesteps: list[float] | None = None) -> list[float]:
    """The turbo schedule: the table of the nearest shift, or custom values snapped to the tables' 20 values."""
    if timesteps is None:
        return list(TURBO_TABLES[nearest_turbo_shift(shift)])
    values = [float(t) for t in timesteps]
    while values and values[-1] == 0:  # trailing zeros are the implicit end point
        values.pop()
    if not 1 <= len(values) <= 20:
        raise AceStepError(f"custom timesteps: expected 1 to 20 values above 0, got {len(values)}")
    if any(not 0 < t <= 1 for t in values):
        raise AceStepError(f"custom timesteps must lie in (0, 1], got {values}")
    return [min(VALID_TIMESTEPS, key=lambda v: abs(v - t)) for t in values]


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 linspace as torch computes it on the CPU, so schedules match bit for bit.

    torch fills the first half as start + step*i and the second as end - step*(steps-1-i)
    with a fused multiply-add (one rounding); the exact product of two float32 values
    fits a float64, so the host emulates the FMA in float64 and rounds once.
    """
    step = np.float64(np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1)))
    i = np.arange(steps, dtype=np.float64)
    values = np.where(i < steps // 2, np.float32(start) + step * i, np.float32(end) - step * (steps - 1 - i))
    return values.astype(np.float32)


def base_timesteps(steps: int, shift: float = 1.0, timesteps: list[float] | None = None) -> list[float]:
    """N+1 times from 1 to 0 in float32: linspace, then s*t / (1 + (s-1)*t); or explicit `timesteps` verbatim."""
    if timesteps is not None:
        t = np.asarray(timesteps, np.float32)
        if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) >= 0):
            raise AceStepError("explicit timesteps must be at least two strictly decreasing values")
        return t.tolist()
    if steps < 1:
        raise AceStepError(f"steps must be at least 1, got {steps}")
    t = torch_linspace(1.0, 0.0, steps + 1)
    if shift != 1.0:
        s = np.float32(shift)
        t = (s * t / (np.float32(1) + np.float32(shift - 1) * t)).astype(np.float32)
    return t.tolist()


@dataclass
class TurboSettings:
    shift: float = 3.0
    timesteps: list[float] | None = None
    method: str = "ode"  # ode | sde
    # The reference builds the schedule in the model dtype (bf16 rounds 0.954545 to 0.953125); None = model dtype.
    schedule_dtype: mx.Dtype | None = None


@dataclass
class BaseSettings:
    steps: int = 32
    shift: float = 1.0
    guidance_scale: float = 7.0
    guidance: str = "apg"  # apg | adg | cfg
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    method: str = "ode"
    timesteps: list[float] | None = None
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 2.5
    adg_angle_clip: float = 3.14 / 6  # the reference's constant, not pi/6
    schedule_dtype: mx.Dtype | None = None  # as TurboSettings


@dataclass
class MomentumBuffer:
    momentum: float = -0.75
    running: mx.array | float = 0.0

    def update(self, value: mx.array) -> mx.array:
        self.running = value + self.momentum * self.running
        return self.running


def apg(v_cond, v_uncond, scale: float, buffer: MomentumBuffer | None, norm_threshold: float = 2.5, eta: float = 0.0):
    """Adaptive projected guidance along the time axis (axis 1), per row and channel."""
    diff = v_cond - v_uncond
    if buffer is not None:
        diff = buffer.update(diff)
    if norm_threshold > 0:
        norm = mx.sqrt(mx.sum(diff * diff, axis=1, keepdims=True))
        diff = diff * mx.minimum(1.0, norm_threshold / norm)
    unit = v_cond / mx.maximum(mx.sqrt(mx.sum(v_cond * v_cond, axis=1, keepdims=True)), 1e-12)
    parallel = mx.sum(diff * unit, axis=1, keepdims=True) * unit
    return v_cond + (scale - 1) * ((diff - parallel) + eta * parallel)


def cfg(v_cond, v_uncond, scale: float):
    return v_uncond + scale * (v_cond - v_uncond)


def adg(x, v_cond, v_uncond, t: float, scale: float, angle_clip: float = 3.14 / 6):
    """Angle-based dynamic guidance (per latent frame, over the channel axis)."""
    weight = max(scale - 1, 0) + 1e-3
    x0_c = x - t * v_cond
    x0_u = x - t * v_uncond

    def unit(a):
        return a / mx.sqrt(mx.sum(a * a, axis=-1, keepdims=True))

    # theta = 2 atan2(|a - b|, |a + b|) for unit a, b: accurate in float32 where acos(cos) is not.
    a, b = unit(x0_c), unit(x0_u)
    theta = 2 * mx.arctan2(
        mx.sqrt(mx.sum((a - b) ** 2, -1, keepdims=True)), mx.sqrt(mx.sum((a + b) ** 2, -1, keepdims=True))
    )
    limit = math.acos(1.0 - 1e-6)  # the reference clamps cos to +-(1 - 1e-6)
    theta = mx.clip(theta, limit, math.pi - limit)
    theta_new = mx.clip(weight * theta, -angle_clip, angle_clip)
    diff = x0_c - x0_u
    parallel = mx.sum(diff * x0_u, -1, keepdims=True) / (mx.sum(x0_u * x0_u, -1, keepdims=True) + 1e-8) * x0_u
    perp = diff - parallel
    sin = mx.sin(theta)
    perp_new = mx.where(sin > 1e-3, perp * mx.sin(theta_new) / sin, perp * weight)
    x0_new = mx.cos(theta_new) * x0_c + perp_new
    return (x - x0_new) / t


@dataclass
class EditHooks:
    """What the editing tasks add to a sampler run (spec 5.8).

    Cover strength below 1: from step `int(K * switch_fraction)` on, the condition is `switch_to`
    (encoder states, context latents) instead. Repaint injection: after each step k below
    `round(K * inject_fraction)`, frames outside the region (`keep` = 1) are reset to the source
    re-noised to the next time, `t' eps + (1 - t') x_src` with the initial noise eps. At the end the
    result is blended into the source with `blend` (1 = generated).
    """

    switch_fraction: float = 1.0
    switch_to: tuple | None = None
    source: mx.array | None = None  # [B, T, C] clean source latents
    keep: mx.array | None = None  # [B, T, 1] 1 where the source is kept (outside the region)
    inject_fraction: float = 0.0
    blend: mx.array | None = None  # [B, T, 1]

    def switch_step(self, steps: int) -> int | None:
        return int(steps * self.switch_fraction) if self.switch_to is not None and self.switch_fraction < 1 else None

    def after_step(self, k: int, steps: int, x: mx.array, t_next: float, noise: mx.array) -> mx.array:
        if self.source is None or k >= round(steps * self.inject_fraction):
            return x
        renoised = t_next * noise + (1 - t_next) * self.source.astype(x.dtype)
        return mx.where(self.keep.astype(mx.bool_), renoised, x)

    def finish(self, x: mx.array) -> mx.array:
        if self.source is None or self.blend is None:
            return x
        m = self.blend.astype(x.dtype)
        return m * x + (1 - m) * self.source.astype(x.dtype)


def draw_noise(shape, dtype, key: mx.array | None) -> mx.array:
    return mx.random.normal(shape, dtype=dtype, key=key)


@dataclass
class Trace:
    """Per-step decoder inputs and outputs, for localising a mismatch (like the fixtures' debug_* tensors)."""

    xt: list = field(default_factory=list)
    t: list = field(default_factory=list)
    velocity: list = field(default_factory=list)


class Denoiser:
    """One DiT evaluation with the condition's cross-attention K/V computed once for every step."""

    def __init__(self, decoder: AceStepDiTModel, encoder_hidden_states: mx.array, context: mx.array):
        self.decoder = decoder
        self.kv = decoder.cross_key_values(encoder_hidden_states)
        self.context = context

    def __call__(self, x: mx.array, t: float, rows: slice | None = None) -> mx.array:
        kv = self.kv if rows is None else [(k[rows], v[rows]) for k, v in self.kv]
        context = self.context if rows is None else self.context[rows]
        tt = mx.full((x.shape[0],), t, dtype=x.dtype)
        return self.decoder(x, tt, tt, context, kv)


@dataclass
class _Run:
    """What both samplers set up alike: dtype, latent shape, starting x, the schedule, re-noise keys."""

    dtype: mx.Dtype
    shape: tuple
    x: mx.array
    schedule: list[float]
    renoise: list[mx.array] | None
    renoise_keys: mx.array

    def fresh_noise(self, k: int) -> mx.array:
        if self.renoise is not None:
            return self.renoise[k].astype(self.dtype)
        return draw_noise(self.shape, self.dtype, self.renoise_keys[k])


def _begin(decoder, context, method, times, schedule_dtype, noise, renoise, key) -> _Run:
    if method not in ("ode", "sde"):
        raise AceStepError(f"unknown sampling method {method!r} (choose ode or sde)")
    dtype = decoder.scale_shift_table.dtype
    shape = (context.shape[0], context.shape[1], decoder.cfg.audio_acoustic_hidden_dim)
    keys = mx.random.split(key if key is not None else mx.random.key(0), 2)
    if noise is None:
        noise = draw_noise(shape, dtype, keys[0])
    elif tuple(noise.shape) != shape:
        raise AceStepError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
    schedule = mx.array(times, dtype=schedule_dtype or dtype).tolist()  # the reference's schedule is in the model dtype
    if renoise is not None and method == "sde" and len(renoise) < len(schedule) - 1:
        raise AceStepError(f"SDE needs {len(schedule) - 1} re-noise draws, got {len(renoise)}")
    return _Run(
        dtype, shape, noise.astype(dtype), schedule, renoise, mx.random.split(keys[1], max(len(schedule) - 1, 1))
    )


def _finish_step(x, k, n, callback):
    mx.eval(x)
    if callback is not None:
        callback(k + 1, n)
    return x


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
    s = settings or TurboSettings()
    run = _begin(
        decoder, context, s.method, turbo_timesteps(s.shift, s.timesteps), s.schedule_dtype, noise, renoise, key
    )
    x, schedule = run.x, run.schedule
    denoise = Denoiser(decoder, encoder_hidden_states, context)
    switch = edit.switch_step(len(schedule)) if edit is not None else None
    for k, t in enumerate(schedule):
        if k == switch:
            denoise = Denoiser(decoder, *edit.switch_to)
        v = denoise(x, t)
        if trace is not None:
            trace.xt.append(x), trace.t.append(t), trace.velocity.append(v)
        if k == len(schedule) - 1:
            x = x - v * t
        elif s.method == "ode":
            x = x - v * (t - schedule[k + 1])
        else:
            t_next = schedule[k + 1]
            x = t_next * run.fresh_noise(k) + (1 - t_next) * (x - v * t)
        if edit is not None:
            x = edit.after_step(k, len(schedule), x, schedule[k + 1] if k + 1 < len(schedule) else 0.0, run.x)
        x = _finish_step(x, k, len(schedule), callback)
    return x if edit is None else edit.finish(x)


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
    s = settings or BaseSettings()
    if s.guidance not in ("apg", "adg", "cfg"):
        raise AceStepError(f"unknown guidance {s.guidance!r} (choose apg, adg or cfg)")
    run = _begin(
        decoder, context, s.method, base_timesteps(s.steps, s.shift, s.timesteps), s.schedule_dtype, noise, renoise, key
    )
    x, schedule, dtype, b = run.x, run.schedule, run.dtype, context.shape[0]
    n = len(schedule) - 1
    guided = s.guidance_scale > 1.0

    def denoiser(states, ctx):
        if not guided:
            return Denoiser(decoder, states, ctx)
        null = mx.broadcast_to(null_condition_emb.astype(states.dtype), states.shape)
        return Denoiser(decoder, mx.concatenate([states, null]), mx.concatenate([ctx, ctx]))

    denoise = denoiser(encoder_hidden_states, context)
    switch = edit.switch_step(n) if edit is not None else None
    momentum = MomentumBuffer(s.apg_momentum)
    for k in range(n):
        t, t_next = schedule[k], schedule[k + 1]
        if k == switch:
            denoise = denoiser(*edit.switch_to)
        if guided and s.cfg_interval[0] <= t <= s.cfg_interval[1]:
            v_both = denoise(mx.concatenate([x, x]), t)
            # guidance in float32 whatever the model dtype (the reference uses float64 for its projections)
            v_cond, v_uncond = v_both[:b].astype(mx.float32), v_both[b:].astype(mx.float32)
            if s.guidance == "apg":
                v = apg(v_cond, v_uncond, s.guidance_scale, momentum, s.apg_norm_threshold)
            elif s.guidance == "adg":
                v = adg(x.astype(mx.float32), v_cond, v_uncond, t, s.guidance_scale, s.adg_angle_clip)
            else:
                v = cfg(v_cond, v_uncond, s.guidance_scale)
            v, v_raw = v.astype(dtype), v_both
        else:  # outside the interval only the conditional prediction counts: skip the null half
            v = v_raw = denoise(x, t, slice(0, b) if guided else None)
        if trace is not None:
            trace.xt.append(x), trace.t.append(t), trace.velocity.append(v_raw)
        if s.method == "ode":
            x = x - v * (t - t_next)
        else:  # the reference's SDE re-noises to 1 - (k+1)/N, ignoring the shift
            t_to = 1.0 - (k + 1) / n
            x = t_to * run.fresh_noise(k) + (1 - t_to) * (x - v * t)
        if edit is not None:
            x = edit.after_step(k, n, x, t_next, run.x)
        x = _finish_step(x, k, n, callback)
    return x if edit is None else edit.finish(x)
