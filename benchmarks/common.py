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

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3"
ROOT = Path(__file__).resolve().parents[1]  # the checkout: children run `python -m benchmarks.<module>` from here


def child_env(side: str) -> dict:
    """The environment of a measurement's process: OpenBLAS preloaded for MLX on Linux, torch with its own BLAS."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if side.startswith("mlx") and platform.system() == "Linux" and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS  # MLX's Linux wheel bundles a ~40x slower reference BLAS
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def reset_peak_rss() -> None:
    """Start a new resident-set high-water mark (Linux; elsewhere the peak stays cumulative)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec and would report the parent's peak.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def blas_in_use(side: str) -> str:
    if side == "reference":
        import torch

        shown = torch.__config__.show()
        name = next((n for n in ("MKL", "OpenBLAS", "BLIS") if n in shown), "unknown BLAS")
        return f"torch {torch.__version__.split('+')[0]} ({name})"
    if sys.platform == "darwin":
        return "MLX (Metal / Accelerate)"
    return "MLX + OpenBLAS (preloaded)" if OPENBLAS in os.environ.get("LD_PRELOAD", "") else "MLX bundled reference BLAS"


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
    env = child_env(side)
    out = subprocess.run([sys.executable, script, "--child", "--side", side, *args], capture_output=True, text=True, env=env)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(line[7:]) | {"blas": blas_of(side, env)}


def report(result: dict) -> None:
    """Print a child's result line (with its peak RSS) for the parent to read."""
    print("RESULT " + json.dumps(result | {"max_rss_gb": max_rss_gb()}))
