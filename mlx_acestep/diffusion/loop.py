"""The one denoising loop, a generator: the caller evaluates, reports progress, cancels and previews.

    velocity = Velocity(decoder, (states, context), guidance=make_guidance("apg", 7.0), null=null_emb)
    for step in denoise(velocity, flow, noise):
        mx.eval(step.x)            # the loop never evaluates: the caller decides when
        report(step.k + 1, step.total)
    x0 = step.x

`Velocity` is one DiT evaluation per step, guided when the guidance is active at that time (the batch doubled
against the null condition), with the condition's cross-attention K/V computed once for every step. Per-step
corrections (an `EditHooks`, the next samplers' wavelet correction) plug in through `corrections`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import mlx.core as mx

from .. import compiling
from ..adapters.stack import has_dora
from .flow import FlowMatching, StepNoise
from .guidance import NoGuidance

if TYPE_CHECKING:
    from ..models.dit.decoder import AceStepDiTModel


class Denoiser:
    """One DiT evaluation with the condition's cross-attention K/V computed once for every step.

    Compiled (`compiling.enabled("dit_step")`), the forward is traced once per batch shape of the generation, with
    the decoder's state as its input: built per generation, so an adapter or a strength set since then is traced
    anew, never served from an older trace; the time goes in as an array, so the steps share one trace. A decoder
    with a DoRA adapter runs eager (`has_dora`)."""

    def __init__(self, decoder: AceStepDiTModel, encoder_hidden_states: mx.array, context: mx.array):
        self.decoder = decoder
        self.kv = decoder.cross_key_values(encoder_hidden_states)
        self.context = context
        forward = decoder.__call__
        if compiling.enabled("dit_step") and not has_dora(decoder):
            forward = compiling.restoring(decoder, mx.compile(forward, inputs=decoder.state))
        self.forward = forward

    def __call__(self, x: mx.array, t: float, rows: slice | None = None) -> mx.array:
        kv = self.kv if rows is None else [(k[rows], v[rows]) for k, v in self.kv]
        context = self.context if rows is None else self.context[rows]
        tt = mx.full((x.shape[0],), t, dtype=x.dtype)
        return self.forward(x, tt, tt, context, kv)


@dataclass(frozen=True)
class VelocityFilter:
    """Upstream's velocity stabilisers (off by default): the norm clamp ||v|| <= k ||x|| per item, and an EMA with
    the previous velocity, v <- (1 - b) v + b v_prev."""

    norm_threshold: float = 0.0
    ema: float = 0.0

    def __call__(self, v: mx.array, x: mx.array, previous: mx.array | None) -> mx.array:
        if self.norm_threshold > 0:
            v_norm = mx.sqrt(mx.sum(v * v, axis=(1, 2), keepdims=True))
            x_norm = mx.sqrt(mx.sum(x * x, axis=(1, 2), keepdims=True)) + 1e-10
            v = v * mx.minimum(self.norm_threshold * x_norm / (v_norm + 1e-10), 1.0)
        if self.ema > 0 and previous is not None:
            v = (1.0 - self.ema) * v + self.ema * previous
        return v


class Velocity:
    """The velocity the loop steps along at (x, t, step k), and the DiT's raw output (both halves when guided).

    `switch_to` and `switch_step`: from that step on, another (states, context) condition (cover strength).
    `stabiliser`: upstream's velocity clamp and EMA, given the velocity they smooth toward (`previous`)."""

    def __init__(
        self, decoder, condition, *, guidance=None, null=None, switch_to=None, switch_step=None, stabiliser=None
    ):
        self.decoder, self.null = decoder, null
        self.guidance = guidance or NoGuidance()
        self.batch = condition[1].shape[0]
        self.switch_to, self.switch_step, self.switched = switch_to, switch_step, False
        self.stabiliser = stabiliser or VelocityFilter()
        self.denoiser = self._denoiser(*condition)

    def _denoiser(self, states: mx.array, context: mx.array) -> Denoiser:
        if not self.guidance.enabled:
            return Denoiser(self.decoder, states, context)
        null = mx.broadcast_to(self.null.astype(states.dtype), states.shape)
        return Denoiser(self.decoder, mx.concatenate([states, null]), mx.concatenate([context, context]))

    def __call__(
        self, x: mx.array, t: float, k: int, previous: mx.array | None = None, corrector: bool = False
    ) -> tuple[mx.array, mx.array]:
        """`corrector`: Heun's second evaluation of step k, at its end (guided by `guidance.corrector`)."""
        if k == self.switch_step and not self.switched:  # once: Heun evaluates a step twice
            self.denoiser, self.switched = self._denoiser(*self.switch_to), True
        v, raw = self._guided(x, t, corrector)
        return self.stabiliser(v, x, previous), raw

    def _guided(self, x: mx.array, t: float, corrector: bool) -> tuple[mx.array, mx.array]:
        guidance, b = self.guidance, self.batch
        if guidance.enabled and guidance.active(t):
            both = self.denoiser(mx.concatenate([x, x]), t)
            rule = guidance.corrector if corrector else guidance
            v = rule(x, both[:b].astype(mx.float32), both[b:].astype(mx.float32), t)
            return v.astype(x.dtype), both
        # outside the interval only the conditional prediction counts: skip the null half
        v = self.denoiser(x, t, slice(0, b) if guidance.enabled else None)
        return v, v


@dataclass
class Step:
    """One step: from `x_in` at time `t` to `x` at `t_next` (`t_after`: the time `x` holds, which differs where the
    base SDE re-noises to 1 - (k+1)/N instead of the next time). `v` is the step's first (guided, stabilised)
    velocity, also under Heun, whose move averages it with a second: upstream's DCW takes its clean estimate from
    this one. `velocity` is the DiT's raw output, both halves when guided: the parity tests' per-step trace. `noise` is the run's initial
    noise. Corrections read it and return a new `x`; after the last step `x` is the run's result."""

    k: int
    total: int
    t: float
    t_next: float
    x_in: mx.array
    v: mx.array
    velocity: mx.array
    noise: mx.array
    x: mx.array | None = None
    t_after: float | None = None  # None: t_next

    @property
    def denoised(self) -> mx.array:
        """The step's clean estimate x0 = x_in - v t."""
        return self.x_in - self.v * self.t


class Correction(Protocol):
    """What the loop applies after each step (in order), and to the result after the last (`finish`)."""

    def after_step(self, step: Step) -> mx.array: ...

    def finish(self, x: mx.array) -> mx.array: ...


def denoise(
    velocity: Callable[..., tuple[mx.array, mx.array]],
    flow: FlowMatching,
    noise: StepNoise,
    corrections: tuple[Correction, ...] = (),
    start: mx.array | None = None,
) -> Iterator[Step]:
    """Step from `start` (default `noise.initial`) at `flow.times[0]` to t = 0, yielding after each step."""
    x, n, previous = noise.initial if start is None else start, flow.steps, None
    for k in range(n):
        t, t_next = flow.times[k], flow.times[k + 1]
        v, raw = velocity(x, t, k, previous)
        if flow.solver == "heun" and (k < n - 1 or flow.heun_last_step):
            predicted = x - v * (t - t_next)
            moved = 0.5 * (v + velocity(predicted, t_next, k, v, corrector=True)[0])  # the trapezoid of both ends
            x_next = x - moved * (t - t_next)
        else:
            moved, x_next = v, flow.step(x, v, k, noise)
        t_after = flow.renoise_to[k] if flow.method == "sde" else t_next
        step = Step(k, n, t, t_next, x, v, raw, noise.initial, x_next, t_after)
        for correction in corrections:
            step.x = correction.after_step(step)
        if k == n - 1:
            for correction in corrections:
                step.x = correction.finish(step.x)
        x, previous = step.x, moved
        yield step
