"""The ACE-Step 1.5 DiT decoder (`AceStepDiTModel`, spec 3.6-3.7): flow-matching velocity from noisy latents.

Names mirror the checkpoint's `decoder.*` keys, except the two patch
convolutions: with kernel = stride = 2 they are plain linear maps over pairs
of frames, so the converter stores them as `proj_in` (Linear(2*192 -> D)) and
`proj_out` (Linear(D -> 2*64)) instead of `proj_in.1` / `proj_out.1` (spec 2.5).

Cross-attention keys and values depend only on the condition, so
`cross_key_values()` computes them once per generation; every step reuses them.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from ..layers import MLP, AceStepAttention, additive_mask
from .config import AceStepConfig

TIMESTEP_FEATURES = 256


def timestep_features(t: mx.array) -> mx.array:
    """`[B]` t -> `[B, 256]` = [cos, sin] of 1000 t times exp(-ln(1e4) k / 128), in float32, cast to t's dtype.

    1000 t is rounded to t's dtype before the sinusoid, as the reference computes `t * self.scale` in the model
    dtype (modeling_acestep_v15_turbo.py:240): in bfloat16 the reference's embedding is at 752 for t = 0.75, and a
    bfloat16 run that kept 750 would drift from the reference's own bfloat16 run by as much as it does from float32.
    """
    half = TIMESTEP_FEATURES // 2
    freqs = mx.exp(-math.log(10000.0) * mx.arange(half, dtype=mx.float32) / half)
    args = (t * 1000.0).astype(mx.float32)[:, None] * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1).astype(t.dtype)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(TIMESTEP_FEATURES, dim)
        self.linear_2 = nn.Linear(dim, dim)
        self.time_proj = nn.Linear(dim, 6 * dim)

    def __call__(self, t: mx.array) -> tuple[mx.array, mx.array]:
        """-> (temb `[B, D]`, AdaLN projection `[B, 6, D]`)."""
        temb = self.linear_2(nn.silu(self.linear_1(timestep_features(t))))
        return temb, self.time_proj(nn.silu(temb)).reshape(t.shape[0], 6, -1)


class AceStepDiTLayer(nn.Module):
    """AdaLN self-attention, plain pre-norm cross-attention, AdaLN SwiGLU MLP."""

    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        d, eps = cfg.hidden_size, cfg.rms_norm_eps
        attn = dict(
            hidden=d,
            heads=cfg.num_attention_heads,
            kv_heads=cfg.num_key_value_heads,
            head_dim=cfg.head_dim,
            eps=eps,
            rope_theta=cfg.rope_theta,
        )
        self.self_attn_norm = nn.RMSNorm(d, eps=eps)
        self.self_attn = AceStepAttention(**attn)
        self.cross_attn_norm = nn.RMSNorm(d, eps=eps)
        self.cross_attn = AceStepAttention(**attn, cross=True)
        self.mlp_norm = nn.RMSNorm(d, eps=eps)
        self.mlp = MLP(d, cfg.intermediate_size)
        self.scale_shift_table = mx.zeros((1, 6, d))

    def __call__(
        self, h: mx.array, tproj: mx.array, mask: mx.array | None, cross_kv: tuple, band: int | None = None
    ) -> mx.array:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mx.split(self.scale_shift_table + tproj, 6, axis=1)
        h = h + self.self_attn(self.self_attn_norm(h) * (1 + scale_a) + shift_a, mask, band=band) * gate_a
        h = h + self.cross_attn(self.cross_attn_norm(h), kv=cross_kv)
        return h + self.mlp(self.mlp_norm(h) * (1 + scale_m) + shift_m) * gate_m


class AceStepDiTModel(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.cfg = cfg
        self.proj_in = nn.Linear(p * cfg.in_channels, d)
        self.time_embed = TimestepEmbedding(d)
        self.time_embed_r = TimestepEmbedding(d)
        self.condition_embedder = nn.Linear(cfg.encoder_widths()["hidden"], d)
        self.layers = [AceStepDiTLayer(cfg) for _ in range(cfg.num_hidden_layers)]
        self.norm_out = nn.RMSNorm(d, eps=cfg.rms_norm_eps)
        self.proj_out = nn.Linear(d, p * cfg.audio_acoustic_hidden_dim)
        self.scale_shift_table = mx.zeros((1, 2, d))
        self.checkpointing = False  # training: recompute each layer in the backward pass (bounded activations)

    def cross_key_values(self, encoder_hidden_states: mx.array) -> list[tuple[mx.array, mx.array]]:
        """Per-layer cross-attention K/V of the packed condition `[B, L, E]` (the mask is ignored, as upstream)."""
        c = self.condition_embedder(encoder_hidden_states)
        return [layer.cross_attn.key_values(c) for layer in self.layers]

    def __call__(
        self,
        x: mx.array,
        t: mx.array,
        r: mx.array,
        context: mx.array,
        cross_kv: list[tuple[mx.array, mx.array]],
    ) -> mx.array:
        """Velocity `[B, T, 64]` for noisy latents `x` `[B, T, 64]`, times `t`, `r` `[B]`, context `[B, T, 128]`."""
        b, length, _ = x.shape
        p = self.cfg.patch_size
        temb_t, proj_t = self.time_embed(t)
        temb_r, proj_r = self.time_embed_r(t - r)
        temb, tproj = temb_t + temb_r, proj_t + proj_r

        h = mx.concatenate([context.astype(x.dtype), x], axis=-1)
        pad = -length % p
        if pad:  # odd lengths get zero frames, cropped again at the end
            h = mx.concatenate([h, mx.zeros((b, pad, h.shape[-1]), dtype=h.dtype)], axis=1)
        h = self.proj_in(h.reshape(b, (length + pad) // p, -1))

        window = additive_mask(h.shape[1], None, self.cfg.sliding_window, h.dtype)
        band = self.cfg.sliding_window
        for i, layer in enumerate(self.layers):
            sliding = self.cfg.is_sliding(i)
            run = nn.utils.checkpoint(layer) if self.checkpointing else layer
            h = run(h, tproj, window if sliding else None, cross_kv[i], band if sliding else None)

        shift, scale = mx.split(self.scale_shift_table + temb[:, None], 2, axis=1)
        h = self.norm_out(h) * (1 + scale) + shift
        return self.proj_out(h).reshape(b, length + pad, -1)[:, :length]
