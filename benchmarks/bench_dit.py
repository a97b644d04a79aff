"""One DiT denoising step at the real 2B turbo size (random weights): MLX beside diffusers, one run.

    python benchmarks/bench_dit.py                          # T = 750 and 3000, float32, both sides
    python benchmarks/bench_dit.py --frames 750 --sides mlx,mlx-bf16,mlx-q8,mlx-q4
    python benchmarks/bench_dit.py --frames 250 --sides mlx,mlx+lora   # a rank-64 LoRA on all 96 projections
    python benchmarks/bench_dit.py --tiny                   # a tiny config (checks the script runs)

A step is one decoder forward on `[1, T, 64]` latents with a ~640-token
condition, as in sampling: MLX reuses the condition's cross-attention K/V
across steps (so they are computed once, outside the timed steps), diffusers'
AceStepTransformer1DModel recomputes them every step. Each measurement runs in
a fresh process (weights built there, no checkpoint files); the first step is
a warm-up. On Linux the MLX side preloads OpenBLAS if it is installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import (
    add_step_arguments,
    decoder_config,
    report,
    scale_to_all_layers,  # noqa: E402
    step_child_arguments,
    step_header,
    step_table,
    timed,
)

REAL_2B = dict(
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=24,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    sliding_window=128,
    in_channels=192,
    audio_acoustic_hidden_dim=64,
    patch_size=2,
    layer_types=["sliding_attention", "full_attention"] * 12,
)
TINY = REAL_2B | dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    layer_types=["sliding_attention", "full_attention"],
)


def inputs(config: dict, frames: int, condition: int):
    import numpy as np

    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((1, frames, 64)).astype(np.float32),
        np.concatenate([rng.standard_normal((1, frames, 64)), np.ones((1, frames, 64))], -1).astype(np.float32),
        rng.standard_normal((1, condition, config["hidden_size"])).astype(np.float32),
    )


def attach_random_lora(dit, rank: int) -> int:
    """A random rank-`rank` LoRA on every attention projection (self and cross, q/k/v/o), unfused; its bytes."""
    import mlx.core as mx

    from mlx_acestep.adapters import Adapter, AdapterStack, targets
    from mlx_acestep.adapters.deltas import LoRADelta

    deltas = {}
    for path, (out, inp) in targets(dit).items():
        if ".self_attn." in path or ".cross_attn." in path:
            deltas[path] = LoRADelta(mx.random.normal((rank, inp)) * 0.01, mx.random.normal((out, rank)) * 0.01, 2.0)
    adapter = Adapter("bench", Path("bench"), "peft", deltas)
    stack = AdapterStack()
    stack.add_adapter(adapter)
    stack.apply(dit)
    mx.eval(dit.parameters())
    return stack


def run_mlx(config: dict, variant: str, frames: int, condition: int, steps: int, lora_rank: int = 0) -> dict:
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_acestep.diffusion.loop import Denoiser
    from mlx_acestep.models.dit import AceStepConfig, AceStepModel
    from mlx_acestep.models.dit.decoder import AceStepDiTModel
    from mlx_acestep.quantization import quantize_model

    dit = AceStepDiTModel(AceStepConfig(**config))  # the decoder's fields only: the condition side is not built
    dit.update(nn.utils.tree_map(lambda p: p * 0.5, dit.parameters()))  # keep activations tame through 24 layers
    if variant == "bf16":
        dit.set_dtype(mx.bfloat16)
    elif variant in ("q8", "q4"):
        quantize_model(
            dit, 8 if variant == "q8" else 4, 64, AceStepModel.QUANTIZE_KEEP, AceStepModel.QUANTIZE_AT_LEAST_8
        )
    mx.eval(dit.parameters())
    weights = mx.get_active_memory()
    stack = attach_random_lora(dit, lora_rank) if lora_rank else None
    dtype = mx.bfloat16 if variant == "bf16" else mx.float32
    x, context, states = (mx.array(a).astype(dtype) for a in inputs(config, frames, condition))
    mx.reset_peak_memory()
    denoise = Denoiser(dit, states, context)
    mx.eval(denoise.kv)
    mx.eval(denoise(x, 0.9))  # warm-up

    def step() -> float:
        start = time.perf_counter()
        mx.eval(denoise(x, 0.9))
        return time.perf_counter() - start

    if stack is None:
        return {"step_s": sum(step() for _ in range(steps)) / steps, "peak_gb": mx.get_peak_memory() / 1e9}
    # With an adapter: steps with it and without it (scale 0 skips the side path) alternate in this one
    # process, so a noisy machine slows both alike; the fastest of each is reported.
    times = {"with": [], "without": []}
    for _ in range(steps):
        for label, scale in (("without", 0.0), ("with", 1.0)):
            stack.set_scale("bench", scale)
            stack.apply(dit)
            times[label].append(step())
    best = {k: min(v) for k, v in times.items()}
    return {
        "step_s": best["with"],
        "base_step_s": best["without"],
        "ratio": best["with"] / best["without"],
        "peak_gb": mx.get_peak_memory() / 1e9,
        "adapter_mb": stack.adapter("bench").nbytes / 1e6,
        "extra_gb": (mx.get_active_memory() - weights) / 1e9,
    }


def run_torch(config: dict, frames: int, condition: int, steps: int) -> dict:
    import torch
    from diffusers import AceStepTransformer1DModel

    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    dit = AceStepTransformer1DModel(**config).eval()
    x, context, states = (torch.from_numpy(a) for a in inputs(config, frames, condition))
    t = torch.full((1,), 0.9)

    def step():
        return dit(
            hidden_states=x,
            timestep=t,
            timestep_r=t,
            encoder_hidden_states=states,
            context_latents=context,
            return_dict=False,
        )[0]

    return {"step_s": timed(step, steps), "peak_gb": None}


def child(args) -> None:
    config = decoder_config(REAL_2B, TINY, args.tiny, args.layers)
    if args.side.startswith("mlx"):
        side, _, lora = args.side.partition("+")  # mlx-q8+lora: the same with a LoRA of --lora-rank
        variant = side.split("-", 1)[1] if "-" in side else "f32"
        result = run_mlx(config, variant, args.frame, args.condition, args.steps, args.lora_rank if lora else 0)
    else:
        result = run_torch(config, args.frame, args.condition, args.steps)
    report(scale_to_all_layers(result, args.layers, REAL_2B["num_hidden_layers"]))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="750,3000", help="comma list of latent lengths T (25 Hz)")
    p.add_argument(
        "--sides",
        default="mlx,diffusers",
        help="mlx, mlx-bf16, mlx-q8, mlx-q4, diffusers; '+lora' after an mlx side adds a LoRA (--lora-rank)",
    )
    p.add_argument("--lora-rank", type=int, default=64, help="rank of the random LoRA of the '+lora' sides")
    add_step_arguments(p)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    print(step_header(args, "DiT"))
    extra = step_child_arguments(args, "--lora-rank", str(args.lora_rank))

    def adapter(r):
        if not r.get("adapter_mb"):
            return ""
        return f"; adapter {r['adapter_mb']:.1f} MB, {r['ratio']:.3f}x the step without it ({r['base_step_s']:.2f} s)"

    return step_table(__file__, [int(f) for f in args.frames.split(",")], args.sides.split(","), extra, note=adapter)


if __name__ == "__main__":
    main()
