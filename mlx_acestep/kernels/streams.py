"""A second CPU stream per thread, for the kernels that split work over two cores.

MLX runs each CPU stream on one thread, so the fast paths put half of the
elementwise work on a side stream. A stream belongs to the thread that made it
(another thread that uses it fails with "There is no Stream(cpu, N) in current
thread"), so each thread gets its own.
"""

from __future__ import annotations

import threading

import mlx.core as mx

_local = threading.local()


def side_stream() -> mx.Stream:
    stream = getattr(_local, "side", None)
    if stream is None:
        stream = _local.side = mx.new_stream(mx.cpu)
    return stream


def stream_for(part: int) -> mx.Stream:
    """The default CPU stream for part 0, this thread's side stream for part 1."""
    return mx.default_stream(mx.cpu) if part == 0 else side_stream()
