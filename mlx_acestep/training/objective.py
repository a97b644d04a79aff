"""The flow-matching objective the reference's trainer minimises (the schedule's rules are `diffusion.flow`'s).

Turbo draws `t` uniformly over its 8-step shift-3 inference table (the newer trainer's "discrete" sampling, so the
adapter learns exactly the times it will be run at); base / SFT the continuous logit-normal
`t = sigmoid(mu + sigma · z)` (-0.4 / 1.0). Both use `r = t` (no mean-flow pairs). With `x1 ~ N(0, I)` and `x0`
the clip's latents: `x_t = t·x1 + (1−t)·x0`, `v = decoder(x_t, t, r, context, condition)`, loss
`MSE(v, x1 − x0)` in float32.
"""

from __future__ import annotations

import mlx.core as mx

from ..diffusion.flow import interpolate, velocity_target


def flow_loss(decoder, x0: mx.array, noise: mx.array, t: mx.array, context: mx.array, states: mx.array) -> mx.array:
    """The mean squared error of the predicted velocity against `noise − x0` (float32)."""
    tt = t.astype(x0.dtype)
    xt = interpolate(x0, noise, tt[:, None, None])
    v = decoder(xt, tt, tt, context, decoder.cross_key_values(states))
    return mx.mean((v.astype(mx.float32) - velocity_target(x0, noise)) ** 2)
