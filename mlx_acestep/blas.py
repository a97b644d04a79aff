"""Which BLAS MLX's Linux CPU backend runs, and how to get the fast one (no heavy imports).

MLX's Linux wheel bundles a reference BLAS (~5 GFLOP/s); preloading the system's OpenBLAS gives ~190. The
command line hints at it, the benchmarks' child processes get it, `.ci/run` sets it (a shell copy of these
two facts).
"""

from __future__ import annotations

import os
from pathlib import Path

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"  # Debian/Ubuntu `libopenblas0-pthread`


def openblas_coretype() -> str | None:
    """The OpenBLAS kernel family for this CPU when OpenBLAS 0.3.21 cannot tell by itself. On a VM whose CPU
    reports a generic model name (Sapphire Rapids here) it falls back to a kernel ~6x slower (35 instead of
    ~215 GFLOP/s); naming the family from the CPU's flags restores it."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    return "SKYLAKEX" if "avx512f" in flags else "HASWELL" if "avx2" in flags else None


def preload_command() -> str:
    """The environment a command needs to run on OpenBLAS (and its right kernels), as a shell prefix."""
    coretype = openblas_coretype() if "OPENBLAS_CORETYPE" not in os.environ else None
    return f"LD_PRELOAD={OPENBLAS}" + (f" OPENBLAS_CORETYPE={coretype}" if coretype else "")
