"""VAE speed and memory at the real size (random weights): MLX beside diffusers, one run.

    python benchmarks/bench_vae.py                 # decode 30 s and 120 s, encode 10 s
    python benchmarks/bench_vae.py --long          # also MLX's peak memory decoding 600 s
    python benchmarks/bench_vae.py --tasks decode:30 --sides mlx

Every measurement runs in a fresh subprocess so that peak memory (MLX's
allocator peak and the process's max RSS) belongs to that measurement alone.
On Linux the MLX side preloads OpenBLAS if it is installed (MLX's wheel
bundles a reference BLAS ~40x slower); diffusers uses torch's own BLAS. Needs
the test extra (torch, diffusers) for the reference side.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import report, run_child  # noqa: E402

REAL_VAE = dict(
    encoder_hidden_size=128,
    downsampling_ratios=[2, 4, 4, 6, 10],
    channel_multiples=[1, 2, 4, 8, 16],
    decoder_channels=128,
    decoder_input_channels=64,
    audio_channels=2,
    sampling_rate=48000,
)
HOP, RATE = 1920, 48000


def make_checkpoints(workdir: Path) -> tuple[Path, Path]:
    """A random real-size VAE in the original layout, and its MLX conversion."""
    import torch
    from diffusers import AutoencoderOobleck

    from mlx_acestep.convert import convert_checkpoints

    src, dst = workdir / "src", workdir / "mlx"
    if not (dst / "vae" / "model.safetensors").is_file():
        torch.manual_seed(0)
        model = AutoencoderOobleck(**REAL_VAE).eval()
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, p in params.items():
                if name.endswith("weight_g"):
                    v = params[name[:-1] + "v"]
                    p.copy_(v.flatten(1).norm(dim=1).reshape(p.shape) * (0.5 + torch.rand_like(p)))
                elif name.endswith(("alpha", "beta")):
                    p.copy_(0.3 * torch.randn_like(p))
        model.save_pretrained(src / "vae", safe_serialization=True)
        convert_checkpoints(src, dst, None)
    return src / "vae", dst / "vae"


def inputs(task: str, seconds: float):
    import numpy as np

    rng = np.random.default_rng(0)
    if task == "decode":
        return rng.standard_normal((1, int(seconds * RATE / HOP), 64)).astype(np.float32)
    return (0.3 * rng.standard_normal((1, int(seconds * RATE), 2))).astype(np.float32)


def run_mlx(folder: Path, task: str, seconds: float, chunk: int | None) -> dict:
    import mlx.core as mx

    from mlx_acestep.loading import load_component

    vae = load_component(folder, "vae", parts=("decoder",) if task == "decode" else None)
    x = mx.array(inputs(task, seconds))
    mx.eval(x)
    mx.reset_peak_memory()
    start = time.perf_counter()
    if task == "decode":
        y = vae.decode_chunked(x, **({"chunk": chunk} if chunk else {}))
        mx.eval(y)
    else:
        y = vae.encode_moments_chunked(x, **({"chunk": chunk} if chunk else {}))
        mx.eval(y)
    seconds_taken = time.perf_counter() - start
    return {"time_s": seconds_taken, "peak_gb": mx.get_peak_memory() / 1e9}


def run_torch(folder: Path, task: str, seconds: float, tiled: bool) -> dict:
    import torch
    from diffusers import AutoencoderOobleck

    torch.set_grad_enabled(False)
    vae = AutoencoderOobleck.from_pretrained(folder).eval()
    if tiled:
        vae.enable_tiling()
    x = torch.from_numpy(inputs(task, seconds)).permute(0, 2, 1).contiguous()
    start = time.perf_counter()
    if task == "decode":
        _ = vae.decode(x).sample
    else:
        _ = vae.encode(x).latent_dist.mean
    return {"time_s": time.perf_counter() - start, "peak_gb": None}


def child(args) -> None:
    if args.side == "mlx":
        result = run_mlx(Path(args.folder), args.task, args.seconds, args.chunk)
    else:
        result = run_torch(Path(args.folder), args.task, args.seconds, args.side == "diffusers-tiled")
    report(result)


def measure(side: str, folder: Path, task: str, seconds: float, chunk: int | None) -> dict:
    extra = ["--folder", str(folder), "--task", task, "--seconds", str(seconds)] + (
        ["--chunk", str(chunk)] if chunk else []
    )
    return run_child(__file__, side, extra)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="decode:30,decode:120,encode:10", help="comma list of task:seconds")
    p.add_argument("--sides", default="mlx,diffusers,diffusers-tiled")
    p.add_argument("--long", action="store_true", help="also decode 600 s with MLX (peak memory)")
    p.add_argument("--long-chunk", type=int, default=160, help="MLX chunk for the 600 s decode (bounds peak memory)")
    p.add_argument("--chunk", type=int, default=None, help="MLX chunk in latent frames (default: the library's)")
    p.add_argument(
        "--untiled-max", type=float, default=60, help="skip untiled diffusers beyond this many seconds (memory)"
    )
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mlx_acestep_bench_vae"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--side", help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--task", help=argparse.SUPPRESS)
    p.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    torch_folder, mlx_folder = make_checkpoints(Path(args.workdir))
    tasks = [(t.split(":")[0], float(t.split(":")[1])) for t in args.tasks.split(",")]
    if args.long:
        tasks.append(("decode", 600.0))
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores")
    print("| task | side | chunk | BLAS | time (s) | RTF (audio s / s) | peak MLX (GB) | max RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for task, seconds in tasks:
        for side in args.sides.split(","):
            if side != "mlx" and (seconds >= 600 or (side == "diffusers" and seconds > args.untiled_max)):
                continue
            if side == "diffusers-tiled" and task == "encode" and seconds <= 30:
                continue  # diffusers only tiles encodes past 30 s: same as untiled
            folder = mlx_folder if side == "mlx" else torch_folder
            chunk = args.long_chunk if seconds >= 600 else args.chunk
            r = measure(side, folder, task, seconds, chunk)
            chunk_text = (
                ("default" if chunk is None else str(chunk))
                if side == "mlx"
                else ("tiled" if "tiled" in side else "untiled")
            )
            if "error" in r:
                print(f"| {task} {seconds:g} s | {side} | {chunk_text} | | failed: {r['error']} | | | |", flush=True)
                continue
            peak = f"{r['peak_gb']:.2f}" if r["peak_gb"] is not None else ""
            print(
                f"| {task} {seconds:g} s | {side} | {chunk_text} | {r['blas']} | {r['time_s']:.1f} "
                f"| {seconds / r['time_s']:.2f} | {peak} | {r['max_rss_gb']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
