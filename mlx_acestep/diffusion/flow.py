"""Flow matching as ACE-Step 1.5 runs it: one object for the schedule, the noise interpolation, the ODE/SDE step
and the training-time draw, shared by generation and training (spec 5.6-5.7, 10).

Convention: x_t = t * noise + (1 - t) * x0 and the DiT predicts v = noise - x0.

A run's times run from the first t down to 0 (turbo's table gets its implicit end point appended), so every step
k goes from `times[k]` to `times[k + 1]`. The ODE moves along v; the SDE jumps to the clean estimate
x0 = x - v t and re-noises it to `renoise_to[k]` with fresh noise (turbo to the next time, base / SFT to
1 - (k+1)/N, as the reference does, ignoring the shift). A step that re-noises to 0 draws nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mlx.core as mx

from .. import compiling
from ..errors import AceStepError
from ..names import SAMPLING_METHODS, SOLVERS
from .schedules import TURBO_TRAINING_TABLE, base_timesteps, turbo_timesteps

# The checkpoint config's training-only defaults (spec 2.2): logit-normal times for base / SFT.
TIMESTEP_MU, TIMESTEP_SIGMA = -0.4, 1.0


def interpolate(x0, noise, t, rest=None):
    """The point at time `t` between clean latents and noise: t * noise + (1 - t) * x0 (the one place it is written).
    `rest`: 1 - t already formed (a compiled step takes it as an input, rounded from the Python float as eager
    rounds it)."""
    return t * noise + ((1 - t) if rest is None else rest) * x0


@compiling.switched("guidance")  # the step's times come in as 0-d arrays, never closed over
def _ode_step(x, v, dt):
    return x - v * dt


@compiling.switched("guidance")
def _sde_step(x, v, t, noise, t_to, rest):
    return interpolate(x - v * t, noise, t_to, rest)


def retake(noise: mx.array, other: mx.array, variance: float) -> mx.array:
    """Upstream's retake: a variance-preserving mix of the run's noise with a second draw, cos(v pi/2) noise +
    sin(v pi/2) other, so v = 0 is the song itself and v = 1 the other seed's."""
    v_rad = variance * (math.pi / 2.0)
    return math.cos(v_rad) * noise + math.sin(v_rad) * other


def velocity_target(x0: mx.array, noise: mx.array) -> mx.array:
    """What the DiT is trained to predict at every t, in float32."""
    return (noise - x0).astype(mx.float32)


def training_times(family: str, batch: int, key: mx.array, mu: float = TIMESTEP_MU, sigma: float = TIMESTEP_SIGMA):
    """`[batch]` training times: turbo uniform over the 8-step shift-3 table it is run at; base / SFT the continuous
    logit-normal sigmoid(mu + sigma z) of the newer trainer."""
    if family == "turbo":
        table = mx.array(TURBO_TRAINING_TABLE, dtype=mx.float32)
        return table[mx.random.randint(0, len(TURBO_TRAINING_TABLE), (batch,), key=key)]
    return mx.sigmoid(mu + sigma * mx.random.normal((batch,), key=key))


@dataclass(frozen=True)
class FlowMatching:
    """One sampler run's schedule and step rule."""

    times: tuple[float, ...]  # N + 1 values, the last 0
    method: str = "ode"
    sde_to: str = "next"  # where an SDE step re-noises to: the next time (turbo), or 1 - (k+1)/N (base / SFT)
    solver: str = "euler"  # euler, or heun: two evaluations a step (the ODE only; the loop runs it)
    # Heun on the last step too, its second evaluation at t = 0 (upstream's base / SFT loop); turbo's last step
    # jumps to x0 with one evaluation, as upstream's turbo loop
    heun_last_step: bool = False
    # the times before rounding to the model dtype, where the reference keeps them (turbo's Python list: a cover's
    # noise is mixed at the unrounded time, modeling_acestep_v15_turbo.py:2054-2056); None: `times` themselves
    exact: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.method not in SAMPLING_METHODS:
            raise AceStepError(f"unknown sampling method {self.method!r} (choose {' or '.join(SAMPLING_METHODS)})")
        if self.solver not in SOLVERS:
            raise AceStepError(f"unknown sampler {self.solver!r} (choose {' or '.join(SOLVERS)})")
        if self.solver == "heun" and self.method != "ode":
            raise AceStepError("the heun sampler runs the ODE only (method ode); upstream falls back to euler")

    @classmethod
    def turbo(cls, shift: float = 3.0, timesteps=None, method: str = "ode", dtype: mx.Dtype = mx.float32, steps=None):
        """The turbo schedule (`turbo_timesteps`: the nearest shift's table, custom times snapped to the tables, or
        `steps` of the exactly shifted linspace), in `dtype` as the reference builds it (bf16 rounds 0.954545 to
        0.953125)."""
        exact = (*turbo_timesteps(shift, timesteps, steps), 0.0)
        return cls((*_rounded(exact[:-1], dtype), 0.0), method, exact=exact)

    @classmethod
    def shifted(cls, steps: int, shift: float = 1.0, timesteps=None, method: str = "ode", dtype=mx.float32):
        """Base / SFT: the shifted linspace (or explicit times); the SDE re-noises to 1 - (k+1)/N, ignoring the
        shift, as the reference does."""
        return cls(tuple(base_timesteps(steps, shift, timesteps, dtype)), method, "linear", heun_last_step=True)

    @property
    def steps(self) -> int:
        return len(self.times) - 1

    @property
    def renoise_to(self) -> tuple[float, ...]:
        """Per step, the time the SDE re-noises to."""
        n = self.steps
        return self.times[1:] if self.sde_to == "next" else tuple(1.0 - (k + 1) / n for k in range(n))

    @property
    def draws(self) -> int:
        """How many fresh-noise draws an SDE run takes (what injected re-noise must supply)."""
        return sum(1 for t in self.renoise_to if t != 0) if self.method == "sde" else 0

    def from_step(self, k: int) -> FlowMatching:
        """The run from `times[k]` on (a cover started from its noised source), its step count now the rest."""
        exact = None if self.exact is None else self.exact[k:]
        return dataclasses.replace(self, times=self.times[k:], exact=exact)

    def step(self, x: mx.array, v: mx.array, k: int, fresh_noise: Callable[[int], mx.array]) -> mx.array:
        """x at `times[k + 1]` from x at `times[k]` and the velocity there."""
        t, t_next = self.times[k], self.times[k + 1]
        if self.method == "ode":
            return _ode_step(x, v, mx.array(t - t_next, dtype=v.dtype))
        t_to = self.renoise_to[k]
        if t_to == 0:
            return x - v * t
        noise = fresh_noise(k)
        scalars = mx.array(t, dtype=v.dtype), mx.array(t_to, dtype=noise.dtype), mx.array(1 - t_to, dtype=x.dtype)
        return _sde_step(x, v, scalars[0], noise, *scalars[1:])


def _rounded(times: Sequence[float], dtype: mx.Dtype) -> list[float]:
    return mx.array(times, dtype=dtype).tolist()


class StepNoise:
    """The initial noise and each SDE step's fresh noise: given (injected, as the parity tests do) or drawn from
    `key` (split once into the initial draw and one key per step, so step k's draw never depends on others)."""

    def __init__(self, shape, dtype, steps: int, key=None, noise=None, renoise=None):
        keys = mx.random.split(key if key is not None else mx.random.key(0), 2)
        if noise is None:
            noise = mx.random.normal(shape, dtype=dtype, key=keys[0])
        elif tuple(noise.shape) != tuple(shape):
            raise AceStepError(f"noise has shape {tuple(noise.shape)}, expected {tuple(shape)}")
        self.initial = noise.astype(dtype)
        self.shape, self.dtype, self.renoise = shape, dtype, renoise
        self.keys = mx.random.split(keys[1], max(steps, 1))

    def __call__(self, k: int) -> mx.array:
        if self.renoise is not None:
            return self.renoise[k].astype(self.dtype)
        return mx.random.normal(self.shape, dtype=self.dtype, key=self.keys[k])
