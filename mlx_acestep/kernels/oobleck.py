"""The Oobleck VAE's encoder and decoder on MLX's CPU backend: the same modules, CPU-friendly operations.

Snake. On Metal `sin` is cheap and Snake is one fused kernel. On the CPU
backend elementwise kernels are scalar and `sin` dominated the whole decode,
so we use that sin^2 has period pi / a: reduce r = a x / pi to f in [-1/2, 1/2]
and evaluate sin^2(pi f) as a degree-6 polynomial in f^2 (least-squares fit,
max error 2e-8). The compiled CPU kernel runs ~4x faster than with `sin`.

Time-split execution. MLX runs each elementwise CPU kernel on one thread, one
thread per stream. The activations therefore travel as two time-halves
("parts"): Snake and the residual adds run one half per stream, i.e. on both
cores, and the halves are joined only where a convolution needs its neighbours;
that join writes the convolution's zero padding, a copy the convolution needed
anyway. Fewer full-size temporaries are alive at once, too. Convolutions run as
`addmm` chains (`kernels.conv`).
"""

from __future__ import annotations

import math
import threading

import mlx.core as mx

from .conv import conv1d, conv_transpose1d
from .streams import stream_for

_SIN2_COEFFS = (
    9.86960323959967,
    -32.46960184377248,
    42.7258105681059,
    -30.089708855023513,
    13.005595486278688,
    -3.294641072775591,
)


@mx.compile
def _snake_poly(x, a_over_pi, inv_b):
    y = x.astype(mx.float32)  # as the plain Snake: float32 inside, one rounding at the end
    r = y * a_over_pi
    f = r - mx.round(r)
    g = f * f
    q = _SIN2_COEFFS
    sin2 = g * (q[0] + g * (q[1] + g * (q[2] + g * (q[3] + g * (q[4] + g * q[5])))))
    return (y + inv_b * sin2).astype(x.dtype)


Parts = list[mx.array]
_SPLIT_MIN_SIZE = 1 << 20  # below this, one part: a second stream is not worth it


def split(x: mx.array) -> Parts:
    if x.size < _SPLIT_MIN_SIZE:
        return [x]
    half = x.shape[1] // 2
    return [x[:, :half], x[:, half:]]


def split_like(y: mx.array, parts: Parts) -> Parts:
    if len(parts) == 1:
        return [y]
    half = parts[0].shape[1]
    return [y[:, :half], y[:, half:]]


def join(parts: Parts, pad: int = 0) -> mx.array:
    """Concatenate parts along time, with `pad` zero frames on both sides."""
    b, c = parts[0].shape[0], parts[0].shape[2]
    if pad:
        # Materialised: broadcast zeros send concatenate down a general copy ~3x slower.
        zeros = mx.contiguous(mx.zeros((b, pad, c), dtype=parts[0].dtype))
        parts = [zeros, *parts, zeros]
    if len(parts) == 1:
        return parts[0]
    if b == 1:  # one item (every chunked window): a flat concatenation is a plain memcpy
        return mx.concatenate([p.reshape(-1) for p in parts]).reshape(1, -1, c)
    return mx.concatenate(parts, axis=1)


def on_streams(fn, *part_lists: Parts) -> Parts:
    out = []
    for i, args in enumerate(zip(*part_lists)):
        with mx.stream(stream_for(i)):
            out.append(fn(*args))
    return out


def snake(module, parts: Parts) -> Parts:
    """A `Snake1d` on each part, one part per stream."""
    a, inv_b = module.constants()
    a_over_pi = a / math.pi
    return on_streams(lambda x: _snake_poly(x, a_over_pi, inv_b), parts)


def snake_then_conv(snake_module, conv, parts: Parts) -> mx.array:
    return conv1d(conv, join(snake(snake_module, parts), pad=conv.padding), prepadded=True)


# `on` while `mx.compile` traces the stack (`models.vae.windows.compiled_window`): a trace cannot evaluate mid-graph,
# so the compiled window goes without the evaluation points and holds more activations alive at once
tracing = threading.local()


def _sync_if_large(parts: Parts) -> Parts:
    # Evaluated as one graph, a residual unit split over two streams keeps ~7
    # full-size activations alive (buffers crossing streams wait for the streams
    # to meet); evaluating at these two points keeps it to ~3, at no measurable cost.
    if len(parts) > 1 and not getattr(tracing, "on", False):
        mx.eval(parts)
    return parts


def residual_unit(unit, parts: Parts) -> Parts:
    y = _sync_if_large(split_like(snake_then_conv(unit.snake1, unit.conv1, parts), parts))
    y = snake(unit.snake2, y)
    # x + conv2(y) with conv2 1x1: add the bias to x on both streams, then one
    # in-place addmm per part (BLAS is on both cores already).
    x_plus_bias = on_streams(lambda x: x + unit.conv2.bias, parts)
    w = unit.conv2.weight[:, 0, :].T
    return _sync_if_large([mx.addmm(xb, h, w) for xb, h in zip(x_plus_bias, y)])


def _residual_units(block, parts: Parts) -> Parts:
    for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
        parts = residual_unit(unit, parts)
    return parts


def block(module, parts: Parts) -> Parts:
    """An encoder block (residual units, then Snake and a strided conv) or a decoder block (Snake, a
    transposed conv, then residual units)."""
    if "conv_t1" in module:
        parts = split(conv_transpose1d(module.conv_t1, join(snake(module.snake1, parts))))
        return _residual_units(module, parts)
    return split(snake_then_conv(module.snake1, module.conv1, _residual_units(module, parts)))


def run_stack(module, x: mx.array, dtype=None) -> mx.array:
    """An `OobleckEncoder` or `OobleckDecoder`: conv1 (its output cast to `dtype` if given), the blocks, Snake and
    conv2."""
    first = conv1d(module.conv1, x)
    parts = split(first if dtype is None else first.astype(dtype))
    for b in module.block:
        parts = block(b, parts)
    return snake_then_conv(module.snake1, module.conv2, parts)
