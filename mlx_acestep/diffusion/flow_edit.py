"""Flow-edit (upstream's `flow_edit.py`, #1156): move an existing song toward another caption and / or lyrics while
keeping its structure, by integrating the difference of two velocities instead of one.

With the song's clean latents `x_src`, the schedule's times t_0 > ... > t_N = 0 and the window of steps
[int(N n_min), int(N n_max)):

    edit = x_src
    in the window, each step:   n_avg times: e ~ N(0, 1) (fresh),  z_src = (1 - t) x_src + t e,
                                             z_tar = edit + z_src - x_src,
                                             V_src(z_src) under the source's condition, V_tar(z_tar) under the target's
                                edit += (t_next - t) (mean V_tar - mean V_src)
    after the window:           x = edit + z_src - x_src with one more fresh e (once), then plain Euler on the target

Steps before the window are skipped. Each side (source, target) keeps its own guidance state (APG's momentum), its
own condition K/V and its own previous velocity (the EMA). Inside a step every draw starts from the momentum the
step started with, and the momentum then advances once with the draws' mean guidance difference (upstream's
snapshot / restore, so guidance does not depend on the draws' order). The velocity clamp acts on each draw against
its own latent; the EMA once a step, on the mean.

The schedule is the shifted linspace for every model family, turbo too, with its steps and shift as given (upstream's
`build_timestep_schedule`: turbo is not snapped to its tables here). Turbo runs without guidance (upstream forces its
scale to 1: turbo is CFG-distilled); base / SFT with APG in the guidance interval. DCW, Heun, ADG and the SDE are
not part of it (upstream turns them off; the request refuses them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import mlx.core as mx

from .flow import FlowMatching, interpolate
from .guidance import make_guidance
from .loop import Step, Velocity, VelocityFilter


@dataclass
class FlowEditSettings:
    steps: int = 8
    shift: float = 3.0
    n_min: float = 0.0  # the window, as shares of the schedule's steps
    n_max: float = 1.0
    n_avg: int = 1  # forward-noise draws averaged per step of the window
    guidance_scale: float = 1.0  # base / SFT: APG against the null condition; 1 (turbo): none
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    apg_momentum: float = -0.75
    apg_norm_threshold: float = 2.5
    velocity_norm_threshold: float = 0.0
    velocity_ema_factor: float = 0.0
    schedule_dtype: mx.Dtype | None = None  # as TurboSettings: None = the model dtype
    dcw: ClassVar[None] = None  # never: upstream turns DCW off under flow-edit

    def flow(self, dtype: mx.Dtype) -> FlowMatching:
        return FlowMatching.shifted(self.steps, self.shift, dtype=self.schedule_dtype or dtype)

    def window(self) -> tuple[int, int]:
        """The window's first step and the step after its last (upstream's n_min_step, n_max_step)."""
        return int(self.steps * self.n_min), int(self.steps * self.n_max)

    @property
    def steps_run(self) -> int:
        """The steps this run takes (those before the window are skipped)."""
        return self.steps - self.window()[0]

    @property
    def draws(self) -> int:
        """How many forward-noise draws a run takes: n_avg per window step, one more when steps follow it."""
        first, last = self.window()
        return (last - first) * self.n_avg + (1 if last < self.steps else 0)

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def new_guidance(self):
        """A fresh guidance for one side (each side has its own APG momentum)."""
        return make_guidance("apg", self.guidance_scale, self.cfg_interval, self.apg_momentum, self.apg_norm_threshold)


class ForwardNoise:
    """The window's fresh forward noise, one `[B, T, C]` draw each time the loop asks: given (the parity tests inject
    upstream's draws) or drawn per item from its seed like a seeded generator: the item's key is split at every
    draw, `key, sub = split(key)`, and `sub` draws its row, so draw j of an item depends on its seed and j only."""

    def __init__(self, shape, dtype, seeds: Sequence[int] = (), draws: Sequence[mx.array] | None = None):
        if draws is None and len(seeds) != shape[0]:
            raise ValueError(f"forward noise needs one seed per item, got {len(seeds)} for {shape[0]}")
        self.shape, self.dtype, self.draws, self.taken = shape, dtype, draws, 0
        self.keys = [mx.random.key(s) for s in seeds]

    def __call__(self) -> mx.array:
        self.taken += 1
        if self.draws is not None:
            return self.draws[self.taken - 1].astype(self.dtype)
        rows = []
        for i, key in enumerate(self.keys):
            self.keys[i], sub = mx.random.split(key)
            rows.append(mx.random.normal((1, *self.shape[1:]), dtype=self.dtype, key=sub))
        return mx.concatenate(rows)


class Side:
    """One trajectory, source or target: its condition's velocity (own K/V and guidance state) and the previous
    step's velocity, which its EMA smooths toward."""

    def __init__(self, velocity: Velocity, stabiliser: VelocityFilter):
        self.velocity, self.previous = velocity, None
        self.clamp = VelocityFilter(norm_threshold=stabiliser.norm_threshold)
        self.ema, self.stabiliser = VelocityFilter(ema=stabiliser.ema), stabiliser
        self.momentum = getattr(velocity.guidance, "buffer", None)  # APG's; plain CFG and no guidance have none

    def averaged(self, xs: list[mx.array], t: float, k: int) -> tuple[mx.array, mx.array]:
        """The EMA of the mean clamped velocity over the draws `xs`, each from the momentum the step began with,
        which then advances once with the mean guidance difference; and the last draw's raw DiT output."""
        before = self.momentum.running if self.momentum is not None else None
        guided, b = self.velocity.guidance.enabled and self.velocity.guidance.active(t), self.velocity.batch
        total = difference = raw = None
        for x in xs:
            if self.momentum is not None:
                self.momentum.running = before
            v, raw = self.velocity(x, t, k)
            v = self.clamp(v, x, None)
            total = v if total is None else total + v
            if guided:
                d = raw[:b].astype(mx.float32) - raw[b:].astype(mx.float32)
                difference = d if difference is None else difference + d
        if self.momentum is not None:
            self.momentum.running = before
            if difference is not None:
                self.momentum.update(difference / len(xs))
        self.previous = self.ema(total / len(xs), xs[0], self.previous)
        return self.previous, raw

    def __call__(self, x: mx.array, t: float, k: int) -> tuple[mx.array, mx.array]:
        """One velocity after the window: clamp, then the EMA with the previous (as the plain loop)."""
        v, raw = self.velocity(x, t, k)
        self.previous = self.stabiliser(v, x, self.previous)
        return self.previous, raw


def flow_edit(source: Side, target: Side, flow: FlowMatching, song: mx.array, settings, noise) -> Iterator[Step]:
    """The run's steps from the window's first on (a generator: the caller evaluates each); after the last, `x`
    is the edited song."""
    first, last = settings.window()
    edit, x, n = song, None, flow.steps
    for k in range(first, n):
        t, t_next = flow.times[k], flow.times[k + 1]
        if k < last:
            z_src = [interpolate(song, noise(), t) for _ in range(settings.n_avg)]
            v_src, _ = source.averaged(z_src, t, k)
            v_tar, raw = target.averaged([edit + z - song for z in z_src], t, k)
            x_in, v = edit, v_tar - v_src
            edit = x_next = flow.step(edit, v, k, None)
        else:
            if x is None:  # the window's result, carried to the target's own trajectory
                x = edit + interpolate(song, noise(), t) - song
            (v, raw), x_in = target(x, t, k), x
            x = x_next = flow.step(x, v, k, None)
        yield Step(k - first, n - first, t, t_next, x_in, v, raw, None, x_next)


def run_flow_edit(
    decoder,
    source: tuple[mx.array, mx.array],
    target: tuple[mx.array, mx.array],
    song: mx.array,
    settings: FlowEditSettings,
    noise: ForwardNoise,
    null: mx.array | None = None,
) -> Iterator[Step]:
    """Flow-edit of `song` `[B, T, C]` from the `source` condition (encoder states, context latents) toward the
    `target` one, with the forward noise `noise`; `null` is the null condition embedding (base / SFT's guidance)."""
    dtype = decoder.scale_shift_table.dtype
    stabiliser = VelocityFilter(settings.velocity_norm_threshold, settings.velocity_ema_factor)

    def side(condition):
        guidance = settings.new_guidance()
        return Side(Velocity(decoder, condition, guidance=guidance, null=null), stabiliser)

    return flow_edit(side(source), side(target), settings.flow(dtype), song.astype(dtype), settings, noise)
