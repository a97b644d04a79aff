"""Classifier-free guidance for base / SFT against the null condition embedding (spec 5.7): plain CFG, APG (the
reference's default) and ADG, as objects the denoising loop asks at each step.

Each takes the conditional and unconditional velocities in float32, whatever the model dtype: the reference does
the APG projection and the ADG angle in float64, which Metal lacks, so both run in float32 here (the ADG angle
through a formula that stays accurate for small angles); the difference is reported by the parity tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mlx.core as mx

from .. import compiling
from ..errors import AceStepError
from ..names import GUIDANCE_KINDS

ADG_ANGLE_CLIP = 3.14 / 6  # the reference's constant, not pi/6


@dataclass
class MomentumBuffer:
    """APG's running difference: each step's is its own plus `momentum` times the previous one's."""

    momentum: float = -0.75
    running: mx.array | float = 0.0

    def update(self, value: mx.array) -> mx.array:
        self.running = _advance(value, self.momentum, self.running)
        return self.running


def _advance(value, momentum, running):
    return value + momentum * running


def _scalar(value: float, dtype: mx.Dtype) -> mx.array:
    """A Python float as a 0-d array of what `value * array` rounds it to (`dtype` the array's), so a compiled rule
    takes it as an input (a closed-over float would be baked in at its first trace) and computes what eager does."""
    return mx.array(value, dtype=dtype)


_rule = compiling.switched("guidance")


def _apg_rule(v_cond, v_uncond, running, momentum, scale_m1, eta, threshold=None):
    diff = _advance(v_cond - v_uncond, momentum, running)  # the momentum's running value, in and out as state
    new_running = diff
    if threshold is not None:
        norm = mx.sqrt(mx.sum(diff * diff, axis=1, keepdims=True))
        diff = diff * mx.minimum(1.0, threshold / norm)
    unit = v_cond / mx.maximum(mx.sqrt(mx.sum(v_cond * v_cond, axis=1, keepdims=True)), 1e-12)
    parallel = mx.sum(diff * unit, axis=1, keepdims=True) * unit
    return v_cond + scale_m1 * ((diff - parallel) + eta * parallel), new_running


_apg = _rule(_apg_rule)


def apg(v_cond, v_uncond, scale: float, buffer: MomentumBuffer | None, norm_threshold: float = 2.5, eta: float = 0.0):
    """Adaptive projected guidance along the time axis (axis 1), per row and channel."""
    dt = v_cond.dtype
    if buffer is None:  # no momentum: the running term is 0 * 0, which leaves the difference exact
        buffer = MomentumBuffer(0.0)
    running = buffer.running if isinstance(buffer.running, mx.array) else _scalar(buffer.running, dt)
    args = (v_cond, v_uncond, running, _scalar(buffer.momentum, dt), _scalar(scale - 1, dt), _scalar(eta, dt))
    if norm_threshold > 0:
        out, buffer.running = _apg(*args, _scalar(norm_threshold, dt))
    else:
        out, buffer.running = _apg(*args)
    return out


@_rule
def _cfg(v_cond, v_uncond, scale):
    return v_uncond + scale * (v_cond - v_uncond)


def cfg(v_cond, v_uncond, scale: float):
    return _cfg(v_cond, v_uncond, _scalar(scale, v_cond.dtype))


ADG_COS_LIMIT = math.acos(1.0 - 1e-6)  # the reference clamps cos to +-(1 - 1e-6)


@_rule
def _adg(x, v_cond, v_uncond, t, t32, weight, angle_clip):
    # The two x0 estimates and their difference are formed in the input's dtype, as upstream forms them in the
    # model dtype (acestep/models/common/apg_guidance.py:164-166), and only then widened for the angles.
    x0_c, x0_u = x - t * v_cond, x - t * v_uncond
    diff = (x0_c - x0_u).astype(mx.float32)
    x0_c, x0_u = x0_c.astype(mx.float32), x0_u.astype(mx.float32)

    def unit(a):
        return a / mx.sqrt(mx.sum(a * a, axis=-1, keepdims=True))

    # theta = 2 atan2(|a - b|, |a + b|) for unit a, b: accurate in float32 where acos(cos) is not.
    a, b = unit(x0_c), unit(x0_u)
    theta = 2 * mx.arctan2(
        mx.sqrt(mx.sum((a - b) ** 2, -1, keepdims=True)), mx.sqrt(mx.sum((a + b) ** 2, -1, keepdims=True))
    )
    theta = mx.clip(theta, ADG_COS_LIMIT, math.pi - ADG_COS_LIMIT)
    theta_new = mx.clip(weight * theta, -angle_clip, angle_clip)
    parallel = mx.sum(diff * x0_u, -1, keepdims=True) / (mx.sum(x0_u * x0_u, -1, keepdims=True) + 1e-8) * x0_u
    perp = diff - parallel
    sin = mx.sin(theta)
    perp_new = mx.where(sin > 1e-3, perp * mx.sin(theta_new) / sin, perp * weight)
    x0_new = mx.cos(theta_new) * x0_c + perp_new
    return (x.astype(mx.float32) - x0_new) / t32


def adg(x, v_cond, v_uncond, t: float, scale: float, angle_clip: float = ADG_ANGLE_CLIP):
    """Angle-based dynamic guidance (per latent frame, over the channel axis)."""
    weight = max(scale - 1, 0) + 1e-3
    wide = (_scalar(v, mx.float32) for v in (t, weight, angle_clip))
    return _adg(x, v_cond, v_uncond, _scalar(t, x.dtype), *wide)


@dataclass
class NoGuidance:
    """Only the conditional prediction (turbo, or a scale of 1 or less): one DiT pass per step."""

    enabled = False

    def active(self, t: float) -> bool:
        return False


@dataclass
class Guidance:
    """What every guidance shares: its scale and the interval of times it acts in (outside it only the
    conditional prediction counts, and the null half of the batch is skipped)."""

    scale: float
    interval: tuple[float, float] = (0.0, 1.0)
    enabled = True

    def active(self, t: float) -> bool:
        return self.interval[0] <= t <= self.interval[1]

    def corrector(self, x, v_cond, v_uncond, t: float) -> mx.array:
        """The guided velocity of Heun's second evaluation (at the step's end, `t` its next time)."""
        return self(x, v_cond, v_uncond, t)


@dataclass
class CFG(Guidance):
    def __call__(self, x, v_cond, v_uncond, t: float) -> mx.array:
        return cfg(v_cond, v_uncond, self.scale)


@dataclass
class APG(Guidance):
    momentum: float = -0.75
    norm_threshold: float = 2.5
    buffer: MomentumBuffer = field(init=False)

    def __post_init__(self):
        self.buffer = MomentumBuffer(self.momentum)  # one per run: guidance objects are made per run

    def __call__(self, x, v_cond, v_uncond, t: float) -> mx.array:
        return apg(v_cond, v_uncond, self.scale, self.buffer, self.norm_threshold)

    def corrector(self, x, v_cond, v_uncond, t: float) -> mx.array:
        # upstream's base loop guides Heun's second evaluation with plain CFG, so APG's momentum moves once a step
        return cfg(v_cond, v_uncond, self.scale)


@dataclass
class ADG(Guidance):
    angle_clip: float = ADG_ANGLE_CLIP

    def __call__(self, x, v_cond, v_uncond, t: float) -> mx.array:
        # the loop hands the velocities over widened to float32; narrowing them back to x's dtype is exact
        return adg(x, v_cond.astype(x.dtype), v_uncond.astype(x.dtype), t, self.scale, self.angle_clip)

    def corrector(self, x, v_cond, v_uncond, t: float) -> mx.array:
        # ADG divides by t: at the last step's end (t = 0) upstream's base loop falls back to plain CFG
        return self(x, v_cond, v_uncond, t) if t > 0 else cfg(v_cond, v_uncond, self.scale)


def make_guidance(kind: str, scale: float, interval=(0.0, 1.0), momentum=-0.75, norm_threshold=2.5, angle_clip=None):
    """A fresh guidance for one run (APG keeps momentum across its steps); none for a scale of 1 or less."""
    if kind not in GUIDANCE_KINDS:
        raise AceStepError(
            f"unknown guidance {kind!r} (choose {', '.join(GUIDANCE_KINDS[:-1])} or {GUIDANCE_KINDS[-1]})"
        )
    if scale <= 1.0:
        return NoGuidance()
    if kind == "apg":
        return APG(scale, tuple(interval), momentum, norm_threshold)
    if kind == "adg":
        return ADG(scale, tuple(interval), ADG_ANGLE_CLIP if angle_clip is None else angle_clip)
    return CFG(scale, tuple(interval))
