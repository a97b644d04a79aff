"""Condition encoder (spec 3.3): text projector, lyric encoder, timbre encoder, packing.

Module and attribute names mirror the reference (`encoder.lyric_encoder.layers.0.self_attn.q_proj`, ...)
so checkpoint keys map one to one. The attention block and encoder layer are
the ones the DiT, the FSQ attention pooler and the detokenizer share.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx_lm.models.qwen3 import MLP

from .config import FromDict
from .errors import AceStepError


@dataclass
class AceStepConfig(FromDict):
    """The DiT checkpoint's `config.json` (class AceStepConfig); unknown keys are ignored."""

    hidden_size: int = 2048
    intermediate_size: int = 6144
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    use_sliding_window: bool = True
    sliding_window: int = 128
    layer_types: list[str] = field(default_factory=list)
    text_hidden_dim: int = 1024
    timbre_hidden_dim: int = 64
    num_lyric_encoder_hidden_layers: int = 8
    num_timbre_encoder_hidden_layers: int = 4
    timbre_fix_frame: int = 750  # the timbre window in latent frames (30 s)
    in_channels: int = 192  # src/hint latents | chunk mask | noisy latents
    audio_acoustic_hidden_dim: int = 64
    patch_size: int = 2
    pool_window_size: int = 5
    fsq_dim: int = 2048
    fsq_input_levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    fsq_input_num_quantizers: int = 1
    num_attention_pooler_hidden_layers: int = 2
    is_turbo: bool = False
    # XL checkpoints give the condition encoder its own widths; 2B ones leave them out.
    encoder_hidden_size: int | None = None
    encoder_intermediate_size: int | None = None
    encoder_num_attention_heads: int | None = None
    encoder_num_key_value_heads: int | None = None

    @property
    def is_xl(self) -> bool:
        return self.encoder_hidden_size is not None

    def is_sliding(self, i: int) -> bool:
        """Each stack indexes the one `layer_types` list by its own layer index."""
        kind = self.layer_types[i] if i < len(self.layer_types) else ("sliding_attention" if i % 2 == 0 else "full_attention")
        return self.use_sliding_window and kind == "sliding_attention"

    def encoder_widths(self) -> dict:
        return dict(
            hidden=self.encoder_hidden_size or self.hidden_size,
            intermediate=self.encoder_intermediate_size or self.intermediate_size,
            heads=self.encoder_num_attention_heads or self.num_attention_heads,
            kv_heads=self.encoder_num_key_value_heads or self.num_key_value_heads,
        )


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


_side_stream = None
_CPU_SPLIT_MIN = 1 << 21  # score elements below which one stream is enough


@functools.lru_cache(maxsize=16)  # the same for every sliding layer and every step of a generation
def _band_mask(length: int, window: int, dtype) -> mx.array:
    """`[blocks, window, 3*window]` additive mask of the banded layout: query block i sees keys i*w - w ... i*w + 2w."""
    blocks = -(-length // window)
    start = np.arange(blocks)[:, None, None] * window
    query = start + np.arange(window)[None, :, None]
    key = start - window + np.arange(3 * window)[None, None, :]
    allowed = (np.abs(key - query) <= window) & (key >= 0) & (key < length)
    return mx.where(mx.array(allowed), mx.array(0.0, dtype), mx.array(mx.finfo(dtype).min, dtype))


def _banded_part(q, k, v, scale: float, window: int):
    """Sliding-window attention computing only the band: each block of `window` queries against 3 windows of keys."""
    b, heads, length, d = q.shape
    g = k.shape[1]
    rep = heads // g
    blocks = -(-length // window)
    tail = blocks * window - length
    q = mx.pad(q, [(0, 0), (0, 0), (0, tail), (0, 0)])
    k = mx.pad(k, [(0, 0), (0, 0), (window, window + tail), (0, 0)])
    v = mx.pad(v, [(0, 0), (0, 0), (window, window + tail), (0, 0)])
    index = mx.array((np.arange(blocks)[:, None] * window + np.arange(3 * window)[None]).reshape(-1).astype(np.int32))
    kw = k[:, :, index].reshape(b, g, blocks, 3 * window, d)
    vw = v[:, :, index].reshape(b, g, blocks, 3 * window, d)
    qb = q.reshape(b, g, rep, blocks, window, d).transpose(0, 1, 3, 2, 4, 5).reshape(b, g, blocks, rep * window, d)
    s = (qb * scale) @ kw.swapaxes(-1, -2)
    s = s.reshape(b, g, blocks, rep, window, 3 * window) + _band_mask(length, window, s.dtype)[:, None]
    p = mx.softmax(s.astype(mx.float32), axis=-1).astype(vw.dtype).reshape(b, g, blocks, rep * window, 3 * window)
    o = (p @ vw).reshape(b, g, blocks, rep, window, d).transpose(0, 1, 3, 2, 4, 5)
    return o.reshape(b, heads, blocks * window, d)[:, :, :length]


def _cpu_attention(q, k, v, scale: float, mask, band: int | None = None):
    """softmax(q k^T * scale + mask) v with the GQA groups as a batch of plain matmuls.

    MLX's fused kernel is Metal's; on the CPU its fallback is slower than this, and
    the softmax (an exp per score, ~17 ns each on the CPU) runs on one core, so the
    kv-head groups are split in two halves on two CPU streams. With `band` (a
    sliding window over a sequence longer than 3 windows) only the band is computed.
    """
    global _side_stream
    b, heads, length, d = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    rep = heads // kv_heads

    def part(qp, kp, vp):
        if band is not None:
            return _banded_part(qp, kp, vp, scale, band)
        g = kp.shape[1]
        s = (qp.reshape(b, g, rep * length, d) * scale) @ kp.swapaxes(-1, -2)
        if mask is not None:
            s = (s.reshape(b, g, rep, length, keys) + mask[:, :, None]).reshape(b, g, rep * length, keys)
        p = mx.softmax(s.astype(mx.float32), axis=-1).astype(vp.dtype)
        return (p @ vp).reshape(b, g * rep, length, d)

    if kv_heads < 2 or b * heads * length * keys < _CPU_SPLIT_MIN:
        return part(q, k, v)
    if _side_stream is None:
        _side_stream = mx.new_stream(mx.cpu)
    h = kv_heads // 2
    first = part(q[:, : h * rep], k[:, :h], v[:, :h])
    with mx.stream(_side_stream):
        second = part(q[:, h * rep :], k[:, h:], v[:, h:])
    return mx.concatenate([first, second], axis=1)


def attention(q, k, v, scale: float, mask=None, band: int | None = None):
    """Bidirectional attention, heads-first; `k`/`v` may have fewer (GQA) heads; `mask` additive, broadcastable.

    `band` says the mask is exactly the sliding window |i - j| <= band (no padding), which
    lets the CPU path compute only the band on long sequences.
    """
    if mx.default_device() == mx.cpu:
        use_band = band if band is not None and q.shape[2] == k.shape[2] and q.shape[2] > 3 * band else None
        return _cpu_attention(q, k, v, scale, mask, use_band)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


class AceStepAttention(nn.Module):
    """q/k/v/o without bias, per-head RMSNorm on q and k, RoPE on self-attention only, GQA."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int, eps: float, rope_theta: float, cross: bool = False):
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

    def __init__(self, hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int, eps: float, rope_theta: float):
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

    def __init__(self, cfg: AceStepConfig, in_dim: int, n_layers: int):
        super().__init__()
        w = cfg.encoder_widths()
        self.cfg = cfg
        self.embed_tokens = nn.Linear(in_dim, w["hidden"])
        self.layers = [
            AceStepEncoderLayer(w["hidden"], w["intermediate"], w["heads"], w["kv_heads"], cfg.head_dim, cfg.rms_norm_eps, cfg.rope_theta)
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


class AceStepLyricEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.text_hidden_dim, cfg.num_lyric_encoder_hidden_layers)

    def __call__(self, inputs_embeds: mx.array, attention_mask: mx.array) -> mx.array:
        """`[B, L, text_hidden]` lyric embeddings + `[B, L]` mask -> `[B, L, hidden]` (padded rows computed too)."""
        return self.run_layers(self.embed_tokens(inputs_embeds), attention_mask)


class AceStepTimbreEncoder(EncoderStack):
    def __init__(self, cfg: AceStepConfig):
        super().__init__(cfg, cfg.timbre_hidden_dim, cfg.num_timbre_encoder_hidden_layers)
        self.special_token = mx.zeros((1, 1, cfg.encoder_widths()["hidden"]))

    def __call__(self, packed: mx.array, order: mx.array) -> tuple[mx.array, mx.array]:
        """`[N, T, 64]` reference latents + `[N]` batch index per clip -> (`[B, max_clips, hidden]`, `[B, max_clips]` int mask)."""
        if packed.ndim != 3 or order.ndim != 1 or order.shape[0] != packed.shape[0]:
            raise AceStepError(f"reference latents {tuple(packed.shape)} and order {tuple(order.shape)} do not match")
        h = self.embed_tokens(packed)
        if self.cfg.is_xl:  # XL reads a learned CLS token; 2B reads frame 0 of the clip
            h = mx.concatenate([mx.broadcast_to(self.special_token.astype(h.dtype), (h.shape[0], 1, h.shape[2])), h], axis=1)
        pooled = self.run_layers(h, None)[:, 0]
        return unpack_by_order(pooled, np.array(order).astype(np.int64))


def unpack_by_order(rows: mx.array, order: np.ndarray) -> tuple[mx.array, mx.array]:
    """Group rows per batch item (in order of appearance) into `[B, max_count, D]`, zero-filled, with a mask."""
    if order.size == 0 or order.min() < 0:
        raise AceStepError("reference order must be non-negative batch indices")
    batch = int(order.max()) + 1
    counts = np.bincount(order, minlength=batch)
    max_count = int(counts.max())
    slot = np.zeros_like(order)
    seen = np.zeros(batch, dtype=np.int64)
    for n, b in enumerate(order):
        slot[n], seen[b] = seen[b], seen[b] + 1
    source = np.full(batch * max_count, -1, dtype=np.int64)
    source[order * max_count + slot] = np.arange(order.size)
    valid = source >= 0
    gathered = rows[mx.array(np.where(valid, source, 0).astype(np.int32))]
    out = mx.where(mx.array(valid)[:, None], gathered, mx.zeros_like(gathered))
    return out.reshape(batch, max_count, -1), mx.array(valid.reshape(batch, max_count).astype(np.int64))


def pack_sequences(h1: mx.array, h2: mx.array, m1: mx.array, m2: mx.array) -> tuple[mx.array, mx.array]:
    """cat([h1, h2]) with valid tokens first (stable), padded tokens kept at the end; mask = prefix of ones."""
    h = mx.concatenate([h1, h2], axis=1)
    mask = np.concatenate([np.array(m1).astype(bool), np.array(m2).astype(bool)], axis=1)
    order = np.argsort(~mask, axis=1, kind="stable")
    h = mx.take_along_axis(h, mx.array(order.astype(np.int32))[:, :, None], axis=1)
    lengths = mask.sum(axis=1)
    return h, mx.array(np.arange(mask.shape[1])[None, :] < lengths[:, None])


class AceStepConditionEncoder(nn.Module):
    def __init__(self, cfg: AceStepConfig):
        super().__init__()
        self.text_projector = nn.Linear(cfg.text_hidden_dim, cfg.encoder_widths()["hidden"], bias=False)
        self.lyric_encoder = AceStepLyricEncoder(cfg)
        self.timbre_encoder = AceStepTimbreEncoder(cfg)

    def __call__(
        self,
        text_hidden_states: mx.array,
        text_attention_mask: mx.array,
        lyric_hidden_states: mx.array,
        lyric_attention_mask: mx.array,
        refer_packed: mx.array,
        refer_order: mx.array,
    ) -> tuple[mx.array, mx.array]:
        """-> (encoder_hidden_states `[B, Ll + clips + Lt, hidden]`, mask `[B, ...]` bool, a prefix of ones)."""
        text = self.text_projector(text_hidden_states)
        lyric = self.lyric_encoder(lyric_hidden_states, lyric_attention_mask)
        timbre, timbre_mask = self.timbre_encoder(refer_packed, refer_order)
        if timbre.shape[0] != text.shape[0]:
            raise AceStepError(f"reference clips cover {timbre.shape[0]} batch items, the captions {text.shape[0]}")
        h, mask = pack_sequences(lyric, timbre, lyric_attention_mask, timbre_mask)
        return pack_sequences(h, text, mask, text_attention_mask)
