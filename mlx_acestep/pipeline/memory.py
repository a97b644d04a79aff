"""The memory policy: what the device allows, the VAE's window by memory, and the limits a run holds.

On Metal the memory is unified: weights, activations and the rest of the machine share it, and a run that
outgrows it is killed by the system minutes in. So a run (1) sizes the VAE's decode windows by the machine's
memory as upstream does, (2) wires up to Metal's recommended working set for its duration and bounds MLX's buffer
cache, restoring both after, as mlx-lm's `generate.py` (`wired_limit`) does, and (3) is checked against what the
device allows before anything loads (`fit.py`). Off Metal the wired limit is a no-op and the window stays
`VAE_CHUNK`, so CPU outputs do not move.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import mlx.core as mx

from ..limits import VAE_CHUNK, VAE_WINDOW_BY_MEMORY

GB = 2**30


@dataclass(frozen=True)
class Device:
    """The machine as a run sees it, in bytes: `memory` it has, `allowed` for one run (on Metal the recommended
    working set MLX reports, elsewhere the machine's memory), `metal` whether MLX runs on Metal."""

    memory: int
    allowed: int
    metal: bool


def _machine_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # a platform without these: no figure, no check
        return 0


def device() -> Device:
    """This machine's `Device` (tests hand in a small fake instead)."""
    if mx.metal.is_available():
        info = mx.metal.device_info()
        memory = int(info.get("memory_size", 0)) or _machine_memory()
        return Device(memory, int(info.get("max_recommended_working_set_size", memory)), True)
    memory = _machine_memory()
    return Device(memory, memory, False)


def vae_window(memory_gb: float) -> int:
    """Upstream's MLX decode window for `memory_gb` of unified memory (gpu_config.py:802-810)."""
    for most, frames in VAE_WINDOW_BY_MEMORY:
        if most is None or memory_gb <= most:
            return frames
    raise AssertionError("VAE_WINDOW_BY_MEMORY ends with an open row")


def default_vae_window(dev: Device | None = None) -> int:
    """The window a pipeline decodes in unless given one: by memory on Metal, `VAE_CHUNK` elsewhere (a CPU gains
    nothing from a larger one and its outputs stay where every parity figure was measured)."""
    dev = dev or device()
    return vae_window(dev.memory / GB) if dev.metal else VAE_CHUNK


@contextlib.contextmanager
def run_limits(cache_limit: int, dev: Device | None = None):
    """For one run: MLX's buffer cache bounded to `cache_limit` bytes and, on Metal, up to the recommended working
    set wired (kept resident, not paged out between phases); both restored afterwards, the cache emptied."""
    dev = dev or device()
    previous_cache = mx.set_cache_limit(cache_limit)
    previous_wired = mx.set_wired_limit(dev.allowed) if dev.metal else None
    try:
        yield
    finally:
        if previous_wired is not None:
            mx.synchronize()  # nothing in flight may still rely on the wired set
            mx.set_wired_limit(previous_wired)
        mx.set_cache_limit(previous_cache)
        mx.clear_cache()
