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

from mlx_acestep.blas import OPENBLAS, openblas_coretype  # noqa: F401  (re-exported for the benchmarks)

ROOT = Path(__file__).resolve().parents[1]  # the checkout: children run `python -m benchmarks.<module>` from here


def child_env(side: str) -> dict:
    """The environment of a measurement's process: OpenBLAS preloaded for MLX on Linux, torch with its own BLAS."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if side.startswith("mlx") and platform.system() == "Linux" and Path(OPENBLAS).exists():
        env["LD_PRELOAD"] = OPENBLAS  # MLX's Linux wheel bundles a ~40x slower reference BLAS
        if "OPENBLAS_CORETYPE" not in env and openblas_coretype():
            env["OPENBLAS_CORETYPE"] = openblas_coretype()
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
    return (
        "MLX + OpenBLAS (preloaded)" if OPENBLAS in os.environ.get("LD_PRELOAD", "") else "MLX bundled reference BLAS"
    )


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
    out = subprocess.run(
        [sys.executable, script, "--child", "--side", side, *args], capture_output=True, text=True, env=env
    )
    line = next((row for row in out.stdout.splitlines() if row.startswith("RESULT ")), None)
    if line is None:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(line[7:]) | {"blas": blas_of(side, env)}


def report(result: dict) -> None:
    """Print a child's result line (with its peak RSS) for the parent to read."""
    print("RESULT " + json.dumps(result | {"max_rss_gb": max_rss_gb()}))


def decoder_config(real: dict, tiny: dict, use_tiny: bool, layers: int | None) -> dict:
    """The decoder config a step benchmark builds: the real 2B one (or a tiny one), optionally `layers` of it."""
    config = tiny if use_tiny else real
    if layers:
        config = config | dict(num_hidden_layers=layers, layer_types=config["layer_types"][:layers])
    return config


def scale_to_all_layers(result: dict, layers: int | None, total: int, keys=("step_s", "base_step_s")) -> dict:
    """Per-step times measured on `layers` layers, scaled to the model's `total`."""
    for key in keys:
        if layers and key in result:
            result[key] *= total / layers
    return result


def step_table(
    script: str, frames_list, sides, extra: list[str], audio: str = "audio", note=lambda r: ""
) -> list[dict]:
    """Run every (frames, side) of a step benchmark in its own process and print one table row each."""
    print(f"| T | {audio} | side | BLAS | s / step | peak MLX (GB) | max RSS (GB) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for frames in frames_list:
        for side in sides:
            r = run_child(script, side, ["--frame", str(frames), *extra]) | {"frames": frames, "side": side}
            rows.append(r)
            if "error" in r:
                print(f"| {frames} | {frames / 25:g} s | {side} | | failed: {r['error']} | | |", flush=True)
                continue
            peak = f"{r['peak_gb']:.2f}" if r.get("peak_gb") is not None else ""
            print(
                f"| {frames} | {frames / 25:g} s | {side} | {r['blas']} | {r['step_s']:.2f} | {peak}{note(r)} | "
                f"{r['max_rss_gb']:.2f} |",
                flush=True,
            )
    return rows


def timed(step, steps: int) -> float:
    """Seconds per call of `step` (a function that finishes its work): one warm-up call, then the mean of `steps`."""
    import time

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def step_header(args, what: str) -> str:
    """The machine line a decoder-step benchmark prints above its table."""
    return (
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores; "
        f"{'tiny' if args.tiny else '2B turbo'} {what}, condition {args.condition} tokens"
        + (f"; {args.layers} of 24 layers built, s/step scaled to 24" if args.layers else "")
    )


def step_child_arguments(args, *more: str) -> list[str]:
    """The `add_step_arguments` values a child process is started with, then the benchmark's own `more`."""
    extra = ["--condition", str(args.condition), "--steps", str(args.steps), *more]
    return extra + ["--tiny"] * args.tiny + (["--layers", str(args.layers)] if args.layers else [])


def add_step_arguments(p) -> None:
    """The arguments every decoder-step benchmark takes (and its child processes)."""
    import argparse

    p.add_argument("--condition", type=int, default=640, help="condition tokens")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    p.add_argument("--tiny", action="store_true", help="a tiny config instead of the real 2B size")
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="build only this many of the 24 layers and scale the time to 24 (for slow CPU runs)",
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--frame", type=int, help=argparse.SUPPRESS)
