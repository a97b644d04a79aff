"""CPU fast paths, behind one switch.

The model files hold the plain formulation, the one Metal runs: fused
`mx.fast.scaled_dot_product_attention`, MLX's own convolutions, Snake with `sin`.
On MLX's CPU backend those are slow (the fused attention falls back to a generic
kernel, a convolution lowers to an im2col or a naive loop, elementwise kernels
run on one thread), so this package re-expresses the same modules' arithmetic in
operations the CPU runs fast: attention as batched matmuls (banded for sliding
windows) split over two streams, convolutions as `addmm` chains, Snake as a
polynomial, the VAE's activations as two time-halves on two streams.

`enabled()` is the one switch every call site asks: the fast paths run when the
default device is the CPU and they are not switched off. `MLX_ACESTEP_KERNELS=plain` in the
environment, or `use_plain()` in code, runs the plain (Metal) formulation on the
CPU too, so that path is tested where there is no GPU.
"""

from __future__ import annotations

import contextlib
import os
import threading

import mlx.core as mx

ENV = "MLX_ACESTEP_KERNELS"  # "plain" runs the Metal formulation everywhere
_state = threading.local()


def _default() -> bool:
    return os.environ.get(ENV, "").strip().lower() != "plain"


def enabled() -> bool:
    """Whether the CPU fast paths run here: the default device is the CPU and they are not switched off."""
    on = getattr(_state, "on", None)
    return (_default() if on is None else on) and mx.default_device() == mx.cpu


@contextlib.contextmanager
def use_plain(plain: bool = True):
    """Within the block (this thread), run the plain formulation even on the CPU."""
    previous = getattr(_state, "on", None)
    _state.on = not plain
    try:
        yield
    finally:
        _state.on = previous
