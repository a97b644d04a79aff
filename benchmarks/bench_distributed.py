"""Data-parallel training steps at 1 and 2 ranks (`mx.distributed`, ring backend on loopback): the trainer's step
(`training/parallel.py`) on the real 2B decoder's layers (random weights), the global batch fixed.

    python benchmarks/bench_distributed.py                       # 1 of 24 layers, 10 s crops, rank 64, 2 micro-batches
    python benchmarks/bench_distributed.py --layers 2 --frames 750 --micro-batches 4
    python benchmarks/bench_distributed.py --tiny                # a tiny config (checks the script runs)

A step is `--micro-batches` micro-batches of one crop each (the global batch), split between the ranks: each
computes its micro-batches' loss and LoRA gradient, `nn.average_gradients` all-reduces them, then clipping and
AdamW on every rank. At 1 rank the same code runs with no collective. Reported: seconds per step, steps/s and the
all-reduce's share (its time, and the bytes of the adapter's gradient it carries). One warm-up step, then the mean
of `--steps`. The 2-rank run is `mlx.launch --backend ring -n 2` on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_dit import REAL_2B, TINY  # noqa: E402
from benchmarks.bench_train import lora_decoder  # noqa: E402
from benchmarks.common import decoder_config, report  # noqa: E402


def child(args) -> None:
    import mlx.core as mx
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_map

    from mlx_acestep import distributed
    from mlx_acestep.training import parallel
    from mlx_acestep.training.config import TrainConfig
    from mlx_acestep.training.lora import seed_dropout

    config = decoder_config(REAL_2B, TINY, args.tiny, args.layers)
    dit, stack, value_and_grad, batch = lora_decoder(config, "f32", args.frames, args.condition, args.rank)
    optimizer = optim.AdamW(learning_rate=1e-4, weight_decay=0.01)
    train = TrainConfig(grad_accum=args.micro_batches, batch=1)
    parallel.check_world(train, distributed.size())
    reduce_s = []

    def step(n: int) -> None:
        grads, loss_sum = None, 0.0
        for j in parallel.my_micro_batches(train):
            seed_dropout(stack, n * 1000 + j)
            loss, g = value_and_grad(*batch)
            grads = g if grads is None else tree_map(mx.add, grads, g)
            mx.eval(loss, grads)
            loss_sum += loss.item()
        start = time.perf_counter()
        grads, loss_sum = parallel.combine(grads, loss_sum, n)
        reduce_s.append(time.perf_counter() - start)
        grads, _ = optim.clip_grad_norm(tree_map(lambda g: g / train.grad_accum, grads), 1.0)
        optimizer.update(dit, grads)
        mx.eval(dit.trainable_parameters(), optimizer.state)

    step(0)  # warm-up
    reduce_s.clear()
    start = time.perf_counter()
    for n in range(1, args.steps + 1):
        step(n)
    seconds = (time.perf_counter() - start) / args.steps
    transfer = _transfer_seconds(dit.trainable_parameters()) if distributed.size() > 1 else 0.0
    if distributed.is_leader():
        gradient = sum(v.nbytes for _, v in tree_flatten(dit.trainable_parameters()))
        report(
            {
                "ranks": distributed.size(),
                "step_s": seconds,
                "reduce_s": sum(reduce_s) / len(reduce_s),
                "transfer_s": transfer,
                "gradient_mb": gradient / 1e6,
            }
        )


def _transfer_seconds(tree, repeats: int = 5) -> float:
    """The all-reduce alone, the ranks lined up first: what the step's all-reduce costs without the wait for the
    slower rank that `reduce_s` includes."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_acestep import distributed

    total = 0.0
    for _ in range(repeats):
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=distributed.world(), stream=mx.cpu))  # a barrier
        start = time.perf_counter()
        mx.eval(nn.average_gradients(tree, distributed.world()))
        total += time.perf_counter() - start
    return total / repeats


def run(args, ranks: int) -> dict:
    command = [sys.executable, __file__, "--child", *child_arguments(args)]
    if ranks > 1:
        launcher = Path(sys.executable).with_name("mlx.launch")
        command = [str(launcher), "--backend", "ring", "-n", str(ranks), "--", *command]
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"ranks": ranks, "error": (done.stderr.strip().splitlines() or ["no result"])[-1]}


def child_arguments(args) -> list[str]:
    flags = ["--layers", args.layers, "--frames", args.frames, "--condition", args.condition, "--rank", args.rank]
    flags += ["--micro-batches", args.micro_batches, "--steps", args.steps]
    return [str(f) for f in flags] + ["--tiny"] * args.tiny


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=1, help="layers of the 2B decoder built")
    p.add_argument("--frames", type=int, default=250, help="crop length T (25 Hz; 250 = 10 s)")
    p.add_argument("--condition", type=int, default=640, help="condition tokens")
    p.add_argument("--rank", type=int, default=64, help="LoRA rank")
    p.add_argument("--micro-batches", type=int, default=2, help="micro-batches per step (the global batch)")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--tiny", action="store_true", help="a tiny config instead of the real 2B size")
    p.add_argument("--ranks", default="1,2", help="comma list of world sizes")
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores; "
        f"{'tiny' if args.tiny else f'2B decoder, {args.layers} of 24 layers'}, LoRA rank {args.rank}, "
        f"crop {args.frames / 25:g} s, {args.micro_batches} micro-batches per step"
    )
    print("| ranks | s / step | steps / s | speed-up | all-reduce in the step (s) | all-reduce alone (s) | gradient |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for ranks in [int(r) for r in args.ranks.split(",")]:
        r = run(args, ranks)
        rows.append(r)
        if "error" in r:
            print(f"| {ranks} | failed: {r['error']} | | | | | |", flush=True)
            continue
        base = rows[0].get("step_s", r["step_s"])
        print(
            f"| {ranks} | {r['step_s']:.3f} | {1 / r['step_s']:.2f} | {base / r['step_s']:.2f}x | "
            f"{r['reduce_s']:.3f} | {r['transfer_s']:.3f} | {r['gradient_mb']:.1f} MB |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
