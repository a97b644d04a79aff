"""Compiled against eager, in one process, alternating: the guidance rules and sampler update, and one VAE window.

    python benchmarks/bench_compiled.py              # guidance at a 30 s song's shape, one real-size 256-frame window
    python benchmarks/bench_compiled.py --tiny       # small shapes: a quick check that both paths run
    python benchmarks/bench_compiled.py --only guidance --rounds 9
    python benchmarks/bench_compiled.py --only dit,train   # 2 real-size DiT layers: a step, a LoRA training step

Each variant is timed in rounds, eager and compiled alternating, and the best round is kept (the machine may be
shared: the best is the least disturbed). The first compiled call of each shape (trace, and on the CPU the
compilation of its fused kernels) is reported apart. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.bench_vae import REAL_VAE  # noqa: E402
from mlx_acestep import compiling, kernels  # noqa: E402
from mlx_acestep.diffusion.flow import FlowMatching  # noqa: E402
from mlx_acestep.diffusion.guidance import ADG, APG, CFG  # noqa: E402
from mlx_acestep.models.vae.oobleck import AutoencoderOobleck, OobleckConfig  # noqa: E402
from mlx_acestep.models.vae.windows import compiled_window  # noqa: E402

TINY_VAE = dict(REAL_VAE, channel_multiples=[1, 1, 1, 1, 2], decoder_channels=16)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(label: str, make_run, rounds: int) -> dict:
    """`make_run(compiled)` -> a callable that runs and evaluates the workload once; best of `rounds` each."""
    runs = {on: make_run(on) for on in (False, True)}
    with compiling.use_compiled(True):
        first = timed(runs[True])
    with compiling.use_compiled(False):
        timed(runs[False])  # warm the eager path's buffers too
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for on in (False, True):
            with compiling.use_compiled(on):
                best[on] = min(best[on], timed(runs[on]))
    row = {"case": label, "eager_ms": best[False] * 1e3, "compiled_ms": best[True] * 1e3, "first_ms": first * 1e3}
    row["ratio"] = best[True] / best[False]
    print(
        f"{label:<34} eager {row['eager_ms']:9.2f} ms  compiled {row['compiled_ms']:9.2f} ms  "
        f"x{row['ratio']:.3f}  (first compiled call {row['first_ms']:.0f} ms)",
        flush=True,
    )
    return row


def guidance_cases(shape, steps: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(0)
    draws = [mx.array(rng.standard_normal(shape).astype(np.float32)) for _ in range(3 * steps)]
    mx.eval(draws)
    times = [1.0 - k / steps for k in range(steps)]

    def rule_run(make_rule):
        def run_for(_on):
            def run():
                rule, outs = make_rule(), []
                for k, t in enumerate(times):
                    outs.append(rule(draws[3 * k], draws[3 * k + 1], draws[3 * k + 2], t))
                    mx.eval(outs[-1])

            return run

        return run_for

    def flow_run(method):
        flow = FlowMatching.shifted(steps, 3.0, method=method)

        def run_for(_on):
            def run():
                for k in range(steps):
                    mx.eval(flow.step(draws[3 * k], draws[3 * k + 1], k, lambda k: draws[3 * k + 2]))

            return run

        return run_for

    label = f"{steps} steps {list(shape)}"
    return [
        compare(f"APG (momentum) {label}", rule_run(lambda: APG(7.0)), rounds),
        compare(f"CFG {label}", rule_run(lambda: CFG(7.0)), rounds),
        compare(f"ADG {label}", rule_run(lambda: ADG(7.0)), rounds),
        compare(f"ODE update {label}", flow_run("ode"), rounds),
        compare(f"SDE update {label}", flow_run("sde"), rounds),
    ]


def vae_case(config: dict, frames: int, rounds: int, plain: bool) -> dict:
    vae = AutoencoderOobleck(OobleckConfig(**config), with_encoder=False)
    rng = np.random.default_rng(0)
    for _, module in vae.named_modules():
        if "alpha" in module:  # Snake's log-parameters at bench_vae.py's scale
            module.alpha, module.beta = (mx.array(0.3 * rng.standard_normal(module.alpha.shape)) for _ in "ab")
    mx.eval(vae.parameters())
    z = mx.array(rng.standard_normal((1, frames, 64)).astype(np.float32))
    peaks = {}

    def run_for(on):
        def run():
            with kernels.use_plain(plain), compiling.use_compiled(on):
                mx.reset_peak_memory()
                mx.eval(compiled_window(vae)(z))
                peaks[on] = mx.get_peak_memory() / 1e9
                mx.clear_cache()

        return run

    width = config["decoder_channels"]
    row = compare(f"VAE window {frames} frames c{width}{' plain' if plain else ''}", run_for, rounds)
    row.update(eager_peak_gb=peaks[False], compiled_peak_gb=peaks[True])
    print(f"{'':<34} peak memory: eager {peaks[False]:.2f} GB, compiled {peaks[True]:.2f} GB", flush=True)
    return row


def decoder(config: dict, lora_rank: int = 0):
    """The real (or tiny) DiT decoder with random weights; with a rank-r LoRA on every attention projection."""
    import mlx.nn as nn

    from mlx_acestep.models.dit import AceStepConfig
    from mlx_acestep.models.dit.decoder import AceStepDiTModel
    from mlx_acestep.training.lora import attach_lora

    dit = AceStepDiTModel(AceStepConfig(**config))
    dit.update(nn.utils.tree_map(lambda p: p * 0.5, dit.parameters()))
    deltas = attach_lora(dit, ("self", "cross"), lora_rank, 2.0 * lora_rank, 0.1, mx.random.key(0)) if lora_rank else {}
    mx.eval(dit.parameters())
    return dit, deltas


def dit_case(config: dict, frames: int, rounds: int) -> dict:
    """One denoising step (`diffusion.loop.Denoiser`, what the sampler calls) on a 640-token condition."""
    from benchmarks.bench_dit import inputs
    from mlx_acestep.diffusion.loop import Denoiser

    dit, _ = decoder(config)
    x, context, states = (mx.array(a) for a in inputs(config, frames, 640))

    def run_for(on):
        with compiling.use_compiled(on):
            denoiser = Denoiser(dit, states, context)
        mx.eval(denoiser.kv)
        return lambda: mx.eval(denoiser(x, 0.9))

    return compare(f"DiT step, {config['num_hidden_layers']} layers, T={frames}", run_for, rounds)


def train_case(config: dict, frames: int, rounds: int, rank: int = 64) -> dict:
    """One optimisation step of the trainer (`training.step.TrainStep`): loss, gradient, clip, AdamW."""
    import mlx.optimizers as optim

    from benchmarks.bench_dit import inputs
    from mlx_acestep.training import TrainConfig
    from mlx_acestep.training.lora import seed_dropout
    from mlx_acestep.training.step import TrainStep

    x, context, states = (mx.array(a) for a in inputs(config, frames, 640))
    batch = (x, mx.random.normal(x.shape), mx.array([0.75]), context, states)

    def run_for(on):
        dit, deltas = decoder(config, rank)
        dit.checkpointing = True
        with compiling.use_compiled(on):
            step = TrainStep(dit, optim.AdamW(learning_rate=1e-4), TrainConfig(grad_accum=1))

        def run():
            seed_dropout(deltas, 1)
            loss, grads = step.gradients(iter([batch]))
            step.update(0, grads, loss.item())

        return run

    return compare(f"training step, {config['num_hidden_layers']} layers, T={frames}", run_for, rounds)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small shapes: a quick check")
    p.add_argument("--only", default="guidance,vae,dit,train", help="comma list of guidance, vae, dit, train")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per variant (default 7, VAE 2)")
    p.add_argument("--plain", action="store_true", help="the VAE in the Metal formulation too (slow on a CPU)")
    args = p.parse_args(argv)
    print(f"mlx {mx.__version__}, device {mx.default_device()}, kernels {'on' if kernels.enabled() else 'plain'}")
    only = args.only.split(",")
    if "guidance" in only:
        guidance_cases((1, 50, 64) if args.tiny else (2, 750, 64), 8, args.rounds or 7)
    from benchmarks.bench_dit import REAL_2B, TINY

    layers = dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    if "dit" in only:
        dit_case((TINY if args.tiny else REAL_2B) | layers, 50 if args.tiny else 750, args.rounds or 3)
    if "train" in only:
        train_case((TINY if args.tiny else REAL_2B) | layers, 50 if args.tiny else 750, args.rounds or 3)
    if "vae" in only:
        config, frames = (TINY_VAE, 40) if args.tiny else (REAL_VAE, 256)
        vae_case(config, frames, args.rounds or 2, plain=False)
        if args.plain:
            vae_case(config, frames, args.rounds or 2, plain=True)


if __name__ == "__main__":
    main()
