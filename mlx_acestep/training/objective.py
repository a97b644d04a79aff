"""The flow-matching objective the reference's trainer minimises, and the timesteps it draws.

Turbo: `t` uniform over the 8-step shift-3 inference table (the newer trainer's "discrete" sampling, so the
adapter learns exactly the times it will be run at). Base / SFT: the newer trainer's continuous logit-normal
`t = sigmoid(mu + sigma · z)` with the config's `timestep_mu` / `timestep_sigma` (-0.4 / 1.0). Both use
`r = t` (no mean-flow pairs). With `x1 ~ N(0, I)` and `x0` the clip's latents: `x_t = t·x1 + (1−t)·x0`,
`v = decoder(x_t, t, r, context, condition)`, loss `MSE(v, x1 − x0)` in float32.
"""

from __future__ import annotations

import mlx.core as mx

from ..diffusion.sampler import TURBO_TABLES

TIMESTEP_MU, TIMESTEP_SIGMA = -0.4, 1.0  # spec 2.2: the checkpoint config's training-only defaults


def sample_t(
    family: str, batch: int, key: mx.array, mu: float = TIMESTEP_MU, sigma: float = TIMESTEP_SIGMA
) -> mx.array:
    """`[batch]` training times for the model family."""
    if family == "turbo":
        table = mx.array(TURBO_TABLES[3], dtype=mx.float32)
        return table[mx.random.randint(0, len(TURBO_TABLES[3]), (batch,), key=key)]
    return mx.sigmoid(mu + sigma * mx.random.normal((batch,), key=key))


def flow_loss(decoder, x0: mx.array, noise: mx.array, t: mx.array, context: mx.array, states: mx.array) -> mx.array:
    """The mean squared error of the predicted velocity against `noise − x0` (float32)."""
    tt = t.astype(x0.dtype)
    xt = tt[:, None, None] * noise + (1 - tt[:, None, None]) * x0
    v = decoder(xt, tt, tt, context, decoder.cross_key_values(states))
    target = (noise - x0).astype(mx.float32)
    return mx.mean((v.astype(mx.float32) - target) ** 2)


def text2music_context(silence: mx.array, frames: int, batch: int, dtype) -> mx.array:
    """The context latents of text2music for `frames` frames: the silence latent and an all-ones chunk mask (spec 5.4)."""
    src = mx.broadcast_to(silence[:, :frames].astype(dtype), (batch, frames, silence.shape[-1]))
    return mx.concatenate([src, mx.ones_like(src)], axis=-1)
