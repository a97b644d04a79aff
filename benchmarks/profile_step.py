"""Where one real-size DiT step and one LoRA training step spend their time, op by op, as a fraction of the machine's
measured matmul peak (random weights, one layer built: all 24 layers are the same shape, the step is 24 of them).

    python benchmarks/profile_step.py                 # T = 750 (a 30 s song), float32
    python benchmarks/profile_step.py --frames 3000   # a 120 s song
    python benchmarks/profile_step.py --tiny          # checks the script runs

Each op runs alone on inputs already evaluated (`mx.eval` around it, one warm-up, then the best of `--repeats`), so
its time is its own kernel(s) and passes over memory; the layer's own time (the whole graph at once) is printed
beside their sum. The peak is a float32 GEMM of the MLP's own shape and a large square one on this machine, and the
softmax's cost is put beside `exp`'s own rate, since on MLX's CPU backend elementwise transcendental ops run
scalar on one thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_dit import REAL_2B, TINY  # noqa: E402


def best_of(fn, repeats: int) -> float:
    import mlx.core as mx

    mx.eval(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(m: int, k: int, n: int, repeats: int) -> float:
    """GFLOP/s of a float32 [m, k] @ [k, n] GEMM."""
    import mlx.core as mx

    a, b = mx.random.normal((m, k)), mx.random.normal((k, n))
    mx.eval(a, b)
    return 2 * m * k * n / best_of(lambda: a @ b, repeats) / 1e9


def layer_ops(layer, h, tproj, cross_kv, mask, band):
    """(name, fn, FLOPs) of every op of one AdaLN DiT layer, in order, each on evaluated inputs."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_acestep import kernels
    from mlx_acestep.kernels.activations import swiglu as split_swiglu
    from mlx_acestep.models.layers import attention

    act = split_swiglu if kernels.enabled() else (lambda g, u: nn.silu(g) * u)  # as the layer's MLP runs it
    sa, ca, mlp = layer.self_attn, layer.cross_attn, layer.mlp
    b, n, d = h.shape
    hd, heads, kvh = sa.head_dim, sa.heads, sa.kv_heads
    mods = mx.split(layer.scale_shift_table + tproj, 6, axis=1)
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
    normed = layer.self_attn_norm(h) * (1 + scale_a) + shift_a
    q = sa.q_norm(sa.q_proj(normed).reshape(b, n, heads, hd)).transpose(0, 2, 1, 3)
    k, v = sa.key_values(normed)
    attn = attention(q, k, v, sa.scale, mask, band)
    merged = attn.transpose(0, 2, 1, 3).reshape(b, n, -1)
    qc = ca.q_norm(ca.q_proj(h).reshape(b, n, heads, hd)).transpose(0, 2, 1, 3)
    ck, cv = cross_kv
    gate_up = mlp.gate_proj(normed), mlp.up_proj(normed)
    hidden = act(*gate_up)
    mx.eval(mods, normed, q, k, v, attn, merged, qc, gate_up, hidden)
    keys = ck.shape[2]
    window_keys = min(n, 2 * band + 1) if band else n
    mm = lambda rows, cols_in, cols_out: 2 * b * rows * cols_in * cols_out  # noqa: E731
    rope = lambda x: mx.fast.rope(x, hd, traditional=False, base=sa.rope_theta, scale=1.0, offset=0)  # noqa: E731
    return [
        ("AdaLN table + split", lambda: mx.split(layer.scale_shift_table + tproj, 6, axis=1), 0),
        ("RMSNorm + modulate (self)", lambda: layer.self_attn_norm(h) * (1 + scale_a) + shift_a, 0),
        (
            "q/k/v projections (self)",
            lambda: (sa.q_proj(normed), sa.k_proj(normed), sa.v_proj(normed)),
            mm(n, d, (heads + 2 * kvh) * hd),
        ),
        (
            "q/k RMSNorm + RoPE (self)",
            lambda: (rope(sa.q_norm(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)), rope(k)),
            0,
        ),
        (
            "attention core (self)",
            lambda: attention(q, k, v, sa.scale, mask, band),
            4 * b * heads * n * window_keys * hd,
        ),
        (
            "merge heads + o_proj (self)",
            lambda: sa.o_proj(attn.transpose(0, 2, 1, 3).reshape(b, n, -1)),
            mm(n, heads * hd, d),
        ),
        ("gate + residual (self)", lambda: h + merged * gate_a, 0),
        ("RMSNorm (cross)", lambda: layer.cross_attn_norm(h), 0),
        (
            "q projection + q RMSNorm (cross)",
            lambda: ca.q_norm(ca.q_proj(h).reshape(b, n, heads, hd)).transpose(0, 2, 1, 3),
            mm(n, d, heads * hd),
        ),
        ("attention core (cross)", lambda: attention(qc, ck, cv, ca.scale), 4 * b * heads * n * keys * hd),
        ("merge heads + o_proj + residual (cross)", lambda: h + ca.o_proj(merged), mm(n, heads * hd, d)),
        ("RMSNorm + modulate (MLP)", lambda: layer.mlp_norm(h) * (1 + scale_m) + shift_m, 0),
        ("gate/up projections", lambda: (mlp.gate_proj(normed), mlp.up_proj(normed)), 2 * mm(n, d, mlp_width(mlp))),
        ("SiLU(gate) * up", lambda: act(*gate_up), 0),
        ("down projection", lambda: mlp.down_proj(hidden), mm(n, mlp_width(mlp), d)),
        ("gate + residual (MLP)", lambda: h + merged * gate_m, 0),
    ]


def mlp_width(mlp) -> int:
    return mlp.gate_proj.weight.shape[0]


def build(config: dict, frames: int, condition: int):
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_acestep.models.dit import AceStepConfig
    from mlx_acestep.models.dit.decoder import AceStepDiTModel
    from mlx_acestep.models.layers import additive_mask

    config = config | dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    dit = AceStepDiTModel(AceStepConfig(**config))
    dit.update(nn.utils.tree_map(lambda p: p * 0.5, dit.parameters()))
    mx.eval(dit.parameters())
    d, n = config["hidden_size"], frames // config["patch_size"]
    h = mx.random.normal((1, n, d))
    _, tproj = dit.time_embed(mx.array([0.9]))
    kv = dit.cross_key_values(mx.random.normal((1, condition, config["hidden_size"])))
    window = additive_mask(n, None, config["sliding_window"], h.dtype)
    mx.eval(h, tproj, kv, window)
    return dit, h, tproj, kv, window


def profile_inference(dit, h, tproj, kv, window, band, repeats: int) -> list[tuple]:
    """Rows (layer kind, op, seconds, FLOPs) for a sliding and a full-attention layer, then each layer whole."""
    rows = []
    for i, kind in ((0, "sliding"), (1, "full")):
        layer, mask, b = dit.layers[i], (window if i == 0 else None), (band if i == 0 else None)
        for name, fn, flops in layer_ops(layer, h, tproj, kv[i], mask, b):
            rows.append((kind, name, best_of(fn, repeats), flops))
        rows.append((kind, "WHOLE LAYER (one graph)", best_of(lambda: layer(h, tproj, mask, kv[i], b), repeats), 0))
    return rows


def profile_training(dit, h, tproj, kv, window, band, rank: int, repeats: int) -> list[tuple]:
    """Rows for one sliding + one full layer with a rank-r LoRA on every attention projection, recomputed in the
    backward pass as the trainer runs it: forward, forward + backward, and the AdamW update of its adapter."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from mlx_acestep.training.lora import attach_lora

    attach_lora(dit, ("self", "cross"), rank, 2.0 * rank, 0.0, mx.random.key(0))
    layers = dit.layers

    def forward(model, x):
        for i, layer in enumerate(model.layers):
            x = nn.utils.checkpoint(layer)(x, tproj, window if i == 0 else None, kv[i], band if i == 0 else None)
        return (x * x).mean()

    value_and_grad = nn.value_and_grad(dit, forward)
    optimizer = optim.AdamW(learning_rate=1e-4)
    _, grads = value_and_grad(dit, h)
    optimizer.init(dit.trainable_parameters())
    mx.eval(grads, optimizer.state)
    flops = 2 * sum(p.size for _, p in nn.utils.tree_flatten(layers[0].parameters())) * h.shape[1] * 2
    return [
        ("2 layers", "forward (LoRA, 2 layers)", best_of(lambda: forward(dit, h), repeats), flops),
        # forward, its recomputation, and the backward to the inputs only (the base is frozen: no weight gradients)
        ("2 layers", "forward + backward (recomputed)", best_of(lambda: value_and_grad(dit, h), repeats), 3 * flops),
        ("2 layers", "AdamW update of the adapter", best_of(lambda: optimizer.apply_gradients(grads, dit), repeats), 0),
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=750, help="latent frames (25 per second)")
    p.add_argument("--condition", type=int, default=640, help="condition tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each op (the best is kept)")
    p.add_argument("--rank", type=int, default=64, help="LoRA rank of the training profile")
    p.add_argument("--tiny", action="store_true", help="a tiny config instead of the real 2B size")
    args = p.parse_args(argv)
    import mlx.core as mx

    config = TINY if args.tiny else REAL_2B
    dit, h, tproj, kv, window = build(config, args.frames, args.condition)
    n, d, f = h.shape[1], config["hidden_size"], config["intermediate_size"]
    peak_mlp = matmul_peak(n, d, f, args.repeats)
    peak_square = matmul_peak(2048, 2048, 2048, args.repeats) if not args.tiny else peak_mlp
    scores = mx.random.normal((16, n, n))
    mx.eval(scores)
    exp_ns = best_of(lambda: mx.exp(scores), args.repeats) / scores.size * 1e9
    print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores; MLX {mx.__version__}")
    print(f"T = {args.frames} latent frames ({n} tokens after patching), condition {args.condition} tokens, float32")
    print(f"matmul peak: {peak_mlp:.0f} GFLOP/s at the MLP's shape, {peak_square:.0f} at 2048^3; exp {exp_ns:.1f} ns")
    print("\n| layer | op | ms | share of the layer | GFLOP | GFLOP/s | of peak |\n|---|---|---|---|---|---|---|")
    rows = profile_inference(dit, h, tproj, kv, window, config["sliding_window"], args.repeats)
    for kind in ("sliding", "full"):
        mine = [r for r in rows if r[0] == kind]
        whole = mine[-1][2]
        for _, name, seconds, flops in mine:
            rate = f"{flops / seconds / 1e9:.0f}" if flops else ""
            share = f"{flops / seconds / 1e9 / peak_mlp:.0%}" if flops else ""
            print(
                f"| {kind} | {name} | {seconds * 1e3:.1f} | {seconds / whole:.0%} | {flops / 1e9:.2f} | {rate} | {share} |"
            )
        print(f"| {kind} | sum of the ops | {sum(r[2] for r in mine[:-1]) * 1e3:.1f} | | | | |")
    flops_layer = sum(r[3] for r in rows if r[0] == "sliding") / 2 + sum(r[3] for r in rows if r[0] == "full") / 2
    whole = sum(r[2] for r in rows if r[1].startswith("WHOLE")) / 2
    layers = config["num_hidden_layers"]
    print(
        f"\nA step ({layers} layers): ~{whole * layers:.2f} s, {flops_layer * layers / 1e12:.2f} TFLOP -> "
        f"{flops_layer / whole / 1e9:.0f} GFLOP/s, {flops_layer / whole / 1e9 / peak_mlp:.0%} of the matmul peak"
    )
    print("\n| training | phase | ms | approx. GFLOP | GFLOP/s |\n|---|---|---|---|---|")
    for kind, name, seconds, flops in profile_training(
        dit, h, tproj, kv, window, config["sliding_window"], args.rank, args.repeats
    ):
        rate = f"{flops / seconds / 1e9:.0f}" if flops else ""
        print(f"| {kind} | {name} | {seconds * 1e3:.1f} | {flops / 1e9:.1f} | {rate} |")


if __name__ == "__main__":
    main()
