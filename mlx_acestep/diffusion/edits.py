"""What the editing tasks add to a denoising run (spec 5.8): corrections the loop applies after each step.

Cover strength below 1: from step `int(K * switch_fraction)` on, the condition is `switch_to` (encoder states,
context latents) instead. Repaint injection: after each step k below `round(K * inject_fraction)`, frames
outside the region (`keep` = 1) are reset to the source re-noised to the next time with the initial noise. At the
end the result is blended into the source with `blend` (1 = generated). Cover noise strength c above 0 (upstream's
`cover_noise_strength`): the run starts at the schedule's time t* nearest 1 - c from the source noised to it,
t* noise + (1 - t*) source, and runs only the rest of the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from .flow import FlowMatching, interpolate


@dataclass
class EditHooks:
    switch_fraction: float = 1.0
    switch_to: tuple | None = None
    source: mx.array | None = None  # [B, T, C] clean source latents
    keep: mx.array | None = None  # [B, T, 1] 1 where the source is kept (outside the region)
    inject_fraction: float = 0.0
    blend: mx.array | None = None  # [B, T, 1]
    cover_noise: float = 0.0

    def start(self, flow: FlowMatching, noise: mx.array) -> tuple[FlowMatching, mx.array | None]:
        """The run's schedule and starting latents (None: the noise itself)."""
        if self.cover_noise <= 0 or self.source is None:
            return flow, None
        times = list((flow.exact or flow.times)[:-1])  # turbo's unrounded times, as upstream picks and mixes
        nearest = min(times, key=lambda t: abs(t - (1.0 - self.cover_noise)))  # the first of a tie, as upstream
        return flow.from_step(times.index(nearest)), interpolate(self.source.astype(noise.dtype), noise, nearest)

    def switch_step(self, steps: int) -> int | None:
        """The step whose condition is `switch_to` and stays so (None: no switch)."""
        return int(steps * self.switch_fraction) if self.switch_to is not None and self.switch_fraction < 1 else None

    def after_step(self, step) -> mx.array:
        x = step.x
        if self.source is None or step.k >= round(step.total * self.inject_fraction):
            return x
        # the source noised to the time x holds now (upstream's t_after_step; base SDE: its re-noise time)
        t = step.t_next if step.t_after is None else step.t_after
        renoised = interpolate(self.source.astype(x.dtype), step.noise, t)
        return mx.where(self.keep.astype(mx.bool_), renoised, x)

    def finish(self, x: mx.array) -> mx.array:
        if self.source is None or self.blend is None:
            return x
        m = self.blend.astype(x.dtype)
        return m * x + (1 - m) * self.source.astype(x.dtype)
