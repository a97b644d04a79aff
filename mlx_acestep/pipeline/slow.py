"""A run that MLX's CPU backend would make far slower than it needs to be, said before any weight loads (issue 33).

On the CPU backend, half-precision and quantized matmuls have no fast path: measured at full size on 2 x86 cores
with OpenBLAS (benchmarks/RESULTS.md, issue 33), a q8 DiT's matmuls ran at 1.5 GFLOP/s against 60 for float32 (a
10 s q8 song took 86 minutes), and bfloat16 about as slowly. Metal and CUDA have fast kernels for all of them, so
nothing is said there. The estimate counts the DiT's matmul work only (the phase that dominates such a run) and
says "about": it is a warning, not a promise.
"""

from __future__ import annotations

import mlx.core as mx

from ..diffusion.schedules import TURBO_STEPS
from ..limits import HOP, SAMPLE_RATE

CPU_FLOAT32_FLOPS = 60e9  # float32 matmuls on the CPU backend with OpenBLAS, measured (2 x86 cores)
CPU_SLOWDOWN = 40  # bfloat16 / float16 / q8 / q4 against float32 there, measured
WARN_AFTER_SECONDS = 120  # a run this long or longer at the slow rate is worth a line before it starts


def dit_flops(config, seconds: float, steps: int, rows: int) -> float:
    """Matmul FLOPs of the DiT decoder over a run: 2 x the projections' weights per token, per step, per row."""
    hidden, heads = config.hidden_size, config.num_attention_heads * config.head_dim
    kv = config.num_key_value_heads * config.head_dim
    self_attn = 2 * hidden * heads + 2 * hidden * kv
    cross_attn = 2 * hidden * heads  # the condition's K/V are computed once per run, not per step
    mlp = 3 * hidden * config.intermediate_size
    weights = config.num_hidden_layers * (self_attn + cross_attn + mlp)
    tokens = seconds * SAMPLE_RATE / HOP / config.patch_size
    return 2.0 * weights * tokens * steps * rows


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def slow_run_warning(pipe, seconds: float, steps: int | None, rows: int) -> str | None:
    """The line to say before a half-precision or quantized run on the CPU backend that would take long; None when
    the run is float32, on a GPU, or short anyway."""
    if mx.default_device() != mx.cpu:
        return None
    what = pipe.quantize or ("" if pipe.dtype == mx.float32 else str(pipe.dtype).split(".")[-1])
    if not what:
        return None
    fast = dit_flops(pipe.config, seconds, steps or TURBO_STEPS, rows) / CPU_FLOAT32_FLOPS
    if fast * CPU_SLOWDOWN < WARN_AFTER_SECONDS:
        return None
    return (
        f"a {what} DiT runs about {CPU_SLOWDOWN}x slower than float32 on MLX's CPU backend: this diffusion would take "
        f"about {_minutes(fast * CPU_SLOWDOWN)}, about {_minutes(fast)} with a float32 model (converted with --dtype "
        "float32 --quantize none); Metal and CUDA have no such gap"
    )
