"""Overlap-discard windows over latent frames.

Long audio is decoded and encoded in overlapping windows ("overlap-discard"):
each window is processed with `overlap` extra latent frames on both sides and
only its core is kept. The decoder sees about +/-9 latent frames around an
output sample (conv1 k7: 3 frames; the first block's residual stack at 10
samples/frame: 3.9 frames; the rest: under 2) and the encoder about +/-6, so
an overlap of 16 frames reproduces the un-chunked result up to float rounding.
Upstream uses 64; it costs 2x the compute at its CPU chunk size for no gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx

from ... import compiling, kernels
from ...errors import AceStepError
from ...kernels import oobleck as cpu


@dataclass(frozen=True)
class Window:
    """One overlap-discard window, in latent frames: process [start, stop), keep [core_start, core_stop)."""

    start: int
    stop: int
    core_start: int
    core_stop: int


def plan_windows(total: int, chunk: int, overlap: int) -> list[Window]:
    """Cut `total` frames into windows of at most `chunk` frames whose cores tile [0, total)."""
    if chunk <= 0 or overlap < 0:
        raise AceStepError(f"chunk must be positive and overlap non-negative (got chunk={chunk}, overlap={overlap})")
    if total <= chunk:
        return [Window(0, total, 0, total)]
    # As upstream: halve the overlap until a window has a core left.
    while chunk - 2 * overlap <= 0:
        overlap //= 2
    stride = chunk - 2 * overlap
    windows = []
    for core_start in range(0, total, stride):
        core_stop = min(core_start + stride, total)
        windows.append(Window(max(0, core_start - overlap), min(total, core_stop + overlap), core_start, core_stop))
    return windows


def compiled_window(vae, method: str = "decode"):
    """`vae.decode` (or `vae.encode_moments`) for one window: compiled once per VAE and method (traced once per
    window length, its weights read at each call), or the method itself when `compiling` says eager. On the CPU
    fast path the compiled window has no mid-graph evaluation points, so it holds more activations alive at once
    than the eager one (`benchmarks/RESULTS.md`, "Compiled paths")."""
    eager = getattr(vae, method)
    if not compiling.enabled("vae_window"):
        return eager
    # one per formulation too: a trace keeps the one that ran when it was made (`kernels.enabled()` is read then)
    key = (method, kernels.enabled())
    cache = vae.__dict__.setdefault("_compiled_windows", {})
    if key not in cache:
        cache[key] = mx.compile(eager, inputs=vae.state)
    compiled = cache[key]

    def run(x):
        outer, cpu.tracing.on = getattr(cpu.tracing, "on", False), True
        try:
            return compiled(x)
        finally:
            cpu.tracing.on = outer

    return compiling.restoring(vae, run)
