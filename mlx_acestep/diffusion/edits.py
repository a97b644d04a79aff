"""What the editing tasks add to a denoising run (spec 5.8): corrections the loop applies after each step.

Cover strength below 1: from step `int(K * switch_fraction)` on, the condition is `switch_to` (encoder states,
context latents) instead. Repaint injection: after each step k below `round(K * inject_fraction)`, frames
outside the region (`keep` = 1) are reset to the source re-noised to the next time with the initial noise. At the
end the result is blended into the source with `blend` (1 = generated).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from .flow import interpolate


@dataclass
class EditHooks:
    switch_fraction: float = 1.0
    switch_to: tuple | None = None
    source: mx.array | None = None  # [B, T, C] clean source latents
    keep: mx.array | None = None  # [B, T, 1] 1 where the source is kept (outside the region)
    inject_fraction: float = 0.0
    blend: mx.array | None = None  # [B, T, 1]

    def switch_step(self, steps: int) -> int | None:
        """The step whose condition is `switch_to` and stays so (None: no switch)."""
        return int(steps * self.switch_fraction) if self.switch_to is not None and self.switch_fraction < 1 else None

    def after_step(self, step) -> mx.array:
        x = step.x
        if self.source is None or step.k >= round(step.total * self.inject_fraction):
            return x
        renoised = interpolate(self.source.astype(x.dtype), step.noise, step.t_next)
        return mx.where(self.keep.astype(mx.bool_), renoised, x)

    def finish(self, x: mx.array) -> mx.array:
        if self.source is None or self.blend is None:
            return x
        m = self.blend.astype(x.dtype)
        return m * x + (1 - m) * self.source.astype(x.dtype)
