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

from ...errors import AceStepError


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
