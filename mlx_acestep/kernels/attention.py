"""Attention on the CPU: the GQA groups as batched matmuls, split over two streams, banded for sliding windows.

MLX's fused `scaled_dot_product_attention` is Metal's kernel; on the CPU its
fallback is slower than plain matmuls, and the softmax (an exp per score, ~17 ns
each) runs on one core, so the kv-head groups are split in two halves on two CPU
streams. A sliding window over a sequence longer than three windows computes only
the band: each block of `window` queries against three windows of keys.
"""

from __future__ import annotations

import functools

import mlx.core as mx
import numpy as np

from .streams import side_stream

_CPU_SPLIT_MIN = 1 << 21  # score elements below which one stream is enough


@functools.lru_cache(maxsize=16)  # the same for every sliding layer and every step of a generation
def _band_mask(length: int, window: int, dtype) -> mx.array:
    """`[blocks, window, 3*window]` additive mask of the banded layout: query block i sees keys i*w - w ... i*w + 2w."""
    blocks = -(-length // window)
    start = np.arange(blocks)[:, None, None] * window
    query = start + np.arange(window)[None, :, None]
    key = start - window + np.arange(3 * window)[None, None, :]
    allowed = (np.abs(key - query) <= window) & (key >= 0) & (key < length)
    mask = mx.where(mx.array(allowed), mx.array(0.0, dtype), mx.array(mx.finfo(dtype).min, dtype))
    mx.eval(mask)  # cached and shared: materialised, so a generation on another thread can use it
    return mask


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


def cpu_attention(q, k, v, scale: float, mask, band: int | None = None):
    """softmax(q k^T * scale + mask) v with the GQA groups as a batch of plain matmuls.

    MLX's fused kernel is Metal's; on the CPU its fallback is slower than this, and
    the softmax (an exp per score, ~17 ns each on the CPU) runs on one core, so the
    kv-head groups are split in two halves on two CPU streams. With `band` (a
    sliding window over a sequence longer than 3 windows) only the band is computed.
    """
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
    h = kv_heads // 2
    first = part(q[:, : h * rep], k[:, :h], v[:, :h])
    with mx.stream(side_stream()):
        second = part(q[:, h * rep :], k[:, h:], v[:, h:])
    return mx.concatenate([first, second], axis=1)


def attention(q, k, v, scale: float, mask=None, band: int | None = None):
    """`cpu_attention`, banded when `band` is a sliding window over a self-attention longer than three windows."""
    use_band = band if band is not None and q.shape[2] == k.shape[2] and q.shape[2] > 3 * band else None
    return cpu_attention(q, k, v, scale, mask, use_band)
