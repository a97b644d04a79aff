"""What the benchmarks share: OpenBLAS preloading on Linux, which BLAS each side used, peak RSS, child processes.

Every measurement runs in a fresh subprocess so that peak memory belongs to it alone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mlx_acestep.benchmark import OPENBLAS, peak_rss_bytes


def max_rss_gb() -> float:
    return peak_rss_bytes() / 1e9


def blas_of(side: str, env: dict) -> str:
    if side.startswith("mlx"):
        if sys.platform == "darwin":
            return "Accelerate / Metal"
        return "OpenBLAS (preloaded)" if OPENBLAS in env.get("LD_PRELOAD", "") else "MLX bundled reference BLAS"
    import torch

    cfg = torch.__config__.show()
    for name in ("MKL", "OpenBLAS", "BLIS"):
        if f"BLAS_INFO={name.lower()}" in cfg.replace(" ", "").lower() or name in cfg:
            return f"torch {torch.__version__} ({name})"
    return f"torch {torch.__version__}"


def run_child(script: str, side: str, args: list[str]) -> dict:
    """Run `script --child --side SIDE ARGS` in a fresh process; it prints one `RESULT {json}` line."""
    env = dict(os.environ)
    if side.startswith("mlx") and platform.system() == "Linux" and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS
    out = subprocess.run([sys.executable, script, "--child", "--side", side, *args], capture_output=True, text=True, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(line[7:]) | {"blas": blas_of(side, env)}


def report(result: dict) -> None:
    """Print a child's result line (with its peak RSS) for the parent to read."""
    print("RESULT " + json.dumps(result | {"max_rss_gb": max_rss_gb()}))
