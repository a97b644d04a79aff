"""The attention block, encoder layer and encoder stack that the DiT, its condition encoder and the FSQ modules share.

Names mirror the reference (`layers.0.self_attn.q_proj`, `q_norm`, ...), so
checkpoint keys map one to one. `attention()` is the fused kernel Metal runs;
on the CPU backend it hands over to `kernels.attention` (see `mlx_acestep.kernels`).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.activations import swiglu
from mlx_lm.models.qwen3 import MLP as Qwen3MLP

from .. import kernels
from ..kernels.activations import swiglu as cpu_swiglu
from ..kernels.attention import attention as cpu_attention


def additive_mask(length: int, key_mask: mx.array | None, window: int | None, dtype) -> mx.array | None:
    """The reference's 4-D additive mask: 0 where allowed, finfo.min where blocked.

    Bidirectional; `window` keeps |i - j| <= window; `key_mask` `[B, L]` blocks padded keys.
    """
    if key_mask is None and window is None:
        return None
    allowed = mx.ones((1, 1, length, length), dtype=mx.bool_)
    if window is not None:
        pos = mx.arange(length)
        allowed = allowed & (mx.abs(pos[:, None] - pos[None, :]) <= window)[None, None]
    if key_mask is not None:
        allowed = allowed & key_mask.astype(mx.bool_)[:, None, None, :]
    return mx.where(allowed, mx.array(0.0, dtype), mx.array(mx.finfo(dtype).min, dtype))


def attention(q, k, v, scale: float, mask=None, band: int | None = None):
    """Bidirectional attention, heads-first; `k`/`v` may have fewer (GQA) heads; `mask` additive, broadcastable.

    `band` says the mask is exactly the sliding window |i - j| <= band (no padding), which
    lets the CPU path compute only the band on long sequences.
    """
    if kernels.enabled():
        return cpu_attention(q, k, v, scale, mask, band)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class MLP(Qwen3MLP):
    """Qwen3's SwiGLU MLP (the same weights and names), its activation on the CPU split over two streams."""

    def __call__(self, x: mx.array) -> mx.array:
        act = cpu_swiglu if kernels.enabled() else swiglu
        return self.down_proj(act(self.gate_proj(x), self.up_proj(x)))


class AceStepAttention(nn.Module):
    """q/k/v/o without bias, per-head RMSNorm on q and k, RoPE on self-attention only, GQA."""

    def __init__(
        self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float, rope_theta: float, cross: bool = False
    ):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rope_theta, self.cross = rope_theta, cross
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=eps)

    def key_values(self, source: mx.array) -> tuple[mx.array, mx.array]:
        """Keys (normed; RoPE'd for self-attention) and values of `source`, heads-first.

        For cross-attention they depend only on the condition, so the DiT computes
        them once per generation and passes them back in as `kv`.
        """
        b, length, _ = source.shape
        k = self.k_norm(self.k_proj(source).reshape(b, length, self.kv_heads, self.head_dim)).transpose(0, 2, 1, 3)
        v = self.v_proj(source).reshape(b, length, self.kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        if not self.cross:
            k = mx.fast.rope(k, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=0)
        return k, v

    def __call__(
        self,
        x: mx.array,
        mask: mx.array | None = None,
        context: mx.array | None = None,
        kv: tuple | None = None,
        band: int | None = None,
    ) -> mx.array:
        b, length, _ = x.shape
        k, v = kv if kv is not None else self.key_values(x if context is None else context)
        q = self.q_norm(self.q_proj(x).reshape(b, length, self.heads, self.head_dim)).transpose(0, 2, 1, 3)
        if not self.cross:
            q = mx.fast.rope(q, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=0)
        out = attention(q, k, v, self.scale, mask, band)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, length, -1))


class AceStepEncoderLayer(nn.Module):
    """Pre-norm Qwen3-style block, bidirectional: x += attn(norm(x)); x += mlp(norm(x))."""

    def __init__(
        self, hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int, eps: float, rope_theta: float
    ):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.self_attn = AceStepAttention(hidden, heads, kv_heads, head_dim, eps, rope_theta)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=eps)
        self.mlp = MLP(hidden, intermediate)

    def __call__(self, x: mx.array, mask: mx.array | None) -> mx.array:
        x = x + self.self_attn(self.input_layernorm(x), mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class EncoderStack(nn.Module):
    """embed_tokens (Linear with bias) -> encoder layers (sliding/full by index) -> RMSNorm."""

    def __init__(self, cfg, in_dim: int, n_layers: int):
        """`cfg` is the DiT's `AceStepConfig` (widths, sliding window, layer types)."""
        super().__init__()
        w = cfg.encoder_widths()
        self.cfg = cfg
        self.embed_tokens = nn.Linear(in_dim, w["hidden"])
        self.layers = [
            AceStepEncoderLayer(
                w["hidden"],
                w["intermediate"],
                w["heads"],
                w["kv_heads"],
                cfg.head_dim,
                cfg.rms_norm_eps,
                cfg.rope_theta,
            )
            for _ in range(n_layers)
        ]
        self.norm = nn.RMSNorm(w["hidden"], eps=cfg.rms_norm_eps)

    def run_layers(self, h: mx.array, key_mask: mx.array | None) -> mx.array:
        length = h.shape[1]
        full = additive_mask(length, key_mask, None, h.dtype)
        sliding = additive_mask(length, key_mask, self.cfg.sliding_window, h.dtype)
        # The reference iterates layers[:num_hidden_layers] (the DiT depth); all released models are deeper.
        for i, layer in enumerate(self.layers[: self.cfg.num_hidden_layers]):
            h = layer(h, sliding if self.cfg.is_sliding(i) else full)
        return self.norm(h)
