"""Which hot paths run through `mx.compile`, behind one switch, each with its eager fallback.

`mx.compile` traces a function once per input shape and fuses its elementwise ops into fewer kernels: on a GPU
(Metal, CUDA) that removes kernel launches and passes over memory, which is where a DiT step's non-matmul time
goes there, and mlx-lm compiles its training step for the same reason. On MLX's CPU backend a fused kernel is
still scalar code (no faster `exp`), and the measured gain is nil or negative for some paths
(`benchmarks/RESULTS.md`, "Compiled paths"), so each path's CPU default is what measured faster or equal here.

`MLX_ACESTEP_COMPILE=on|off` in the environment (or `use_compiled()` in code, per thread) forces every path one
way: `off` is the eager formulation, the one to compare against when a compiled result looks wrong. Every compiled
path is tested equal to its eager result (`tests/unit/test_compiled.py`).
"""

from __future__ import annotations

import contextlib
import os
import threading

import mlx.core as mx

ENV = "MLX_ACESTEP_COMPILE"
PATHS = ("dit_step", "guidance", "vae_window", "train_step")
# What measured faster or equal with MLX's CPU backend on this project's benchmark machine (2-core x86-64):
# the DiT step compiled is ~5% slower there (its fused kernels are scalar, and the eager graph already overlaps
# its two streams), APG and ADG compiled are 1.5-2.8x slower (scalar sin/cos/arctan2, broadcast indexing; under a
# millisecond a step either way), a VAE window compiled is no faster and holds 0.9 GB more (the fast path's
# intermediate evaluations cannot run inside a trace); the training step compiled is 8% faster alternating in one
# process and equal in separate ones (and a third faster at small sizes, where launches count, as on a GPU).
CPU_DEFAULTS = {"dit_step": False, "guidance": False, "vae_window": False, "train_step": True}
_state = threading.local()


def _forced() -> bool | None:
    on = getattr(_state, "on", None)
    if on is not None:
        return on
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    return None


def enabled(path: str) -> bool:
    """Whether `path` (one of `PATHS`) runs compiled here."""
    if path not in PATHS:
        raise ValueError(f"unknown compiled path {path!r}")
    forced = _forced()
    if forced is not None:
        return forced
    return mx.default_device() != mx.cpu or CPU_DEFAULTS[path]


@contextlib.contextmanager
def use_compiled(on: bool = True):
    """Within the block (this thread), every path compiled (`on`) or eager."""
    previous = getattr(_state, "on", None)
    _state.on = on
    try:
        yield
    finally:
        _state.on = previous


def switched(path: str):
    """A decorator: the function compiled once (traced at its first call per shape), or run as written when `path`
    says eager at that call. Its per-call values must come in as arrays: a closed-over float is baked into a trace."""

    def wrap(fn):
        compiled = mx.compile(fn)

        def run(*args):
            return (compiled if enabled(path) else fn)(*args)

        return run

    return wrap


def restoring(module, fn):
    """`fn` (a compiled function reading `module`'s state), such that an error inside its trace leaves `module` as
    it was: MLX 0.32 leaves trace placeholders in what a traced function assigned (the weights value_and_grad puts
    back, a cache, a dropout key) when it raises, a Ctrl-C included, and a module kept loaded (a server's, an app's)
    would be unusable after it. Each submodule's entries are kept (nested dicts copied) and put back."""

    def run(*args):
        kept = [(m, {k: dict(v) if type(v) is dict else v for k, v in m.items()}) for m in module.modules()]
        try:
            return fn(*args)
        except BaseException:
            for m, entries in kept:
                dict.clear(m)
                dict.update(m, entries)
            raise

    return run
