"""One LoRA training step at the real 2B size (random weights): MLX beside the torch reference (diffusers +
peft), same shapes, each side in a fresh process.

    python benchmarks/bench_train.py                         # 30 s crop, rank 64, float32, mlx and torch
    python benchmarks/bench_train.py --layers 4              # 4 of 24 layers built, times scaled to 24
    python benchmarks/bench_train.py --sides mlx-bf16,mlx-q8 --layers 2   # the frozen base in bf16 / q8 (QLoRA)
    python benchmarks/bench_train.py --sides mlx,mlx-eager --layers 2   # the trainer's step compiled / eager
    python benchmarks/bench_train.py --tiny                  # a tiny config (checks the script runs)

A step is the trainer's own (`training/step.py`): the flow-matching loss on a `[1, T, 64]` crop with a 640-token condition, its
gradient with respect to a rank-r LoRA on all attention projections (self and cross, q/k/v/o), and an AdamW
update. MLX recomputes decoder layers in the backward pass (`mx.checkpoint`, as `mlx-acestep train` does);
torch keeps its activations (peft's defaults). One warm-up step, then the mean of the timed ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_dit import REAL_2B, TINY, inputs  # noqa: E402
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


def lora_decoder(config: dict, variant: str, frames: int, condition: int, rank: int):
    """(decoder with a rank-r LoRA, its adapter stack, the value-and-grad of the flow loss, one crop's inputs)."""
    import mlx.core as mx
    import mlx.nn as nn

    from mlx_acestep.models.dit import AceStepConfig, AceStepModel
    from mlx_acestep.models.dit.decoder import AceStepDiTModel
    from mlx_acestep.quantization import quantize_model
    from mlx_acestep.training.lora import attach_lora

    dit = AceStepDiTModel(AceStepConfig(**config))
    dit.update(nn.utils.tree_map(lambda p: p * 0.5, dit.parameters()))
    if variant == "bf16":
        dit.set_dtype(mx.bfloat16)
    elif variant in ("q8", "q4"):
        quantize_model(
            dit, 8 if variant == "q8" else 4, 64, AceStepModel.QUANTIZE_KEEP, AceStepModel.QUANTIZE_AT_LEAST_8
        )
    dit.checkpointing = variant != "nockpt"  # mlx-nockpt: activations kept, as torch does (--no-checkpointing)
    stack = attach_lora(dit, ("self", "cross"), rank, 2.0 * rank, 0.1, mx.random.key(0))
    mx.eval(dit.parameters())
    dtype = mx.bfloat16 if variant == "bf16" else mx.float32
    x, context, states = (mx.array(a).astype(dtype) for a in inputs(config, frames, condition))
    noise = mx.random.normal(x.shape).astype(dtype)
    t = mx.array([0.75])
    return dit, stack, (x, noise, t, context, states)


def run_mlx(config: dict, variant: str, frames: int, condition: int, steps: int, rank: int) -> dict:
    import mlx.core as mx
    import mlx.optimizers as optim

    from mlx_acestep.compiling import use_compiled
    from mlx_acestep.training import TrainConfig
    from mlx_acestep.training.lora import seed_dropout
    from mlx_acestep.training.step import TrainStep

    dit, stack, batch = lora_decoder(config, variant, frames, condition, rank)
    optimizer = optim.AdamW(learning_rate=1e-4, weight_decay=0.01)
    with use_compiled(variant != "eager"):  # mlx-eager: the trainer's step without mx.compile
        train_step = TrainStep(dit, optimizer, TrainConfig(grad_accum=1, grad_clip=1.0))
    seeds = iter(range(10**6))

    def step():
        seed_dropout(stack, next(seeds))  # as the trainer does: the recomputed layers redraw the same masks
        loss, grads = train_step.gradients(iter([batch]))
        train_step.update(0, grads, loss.item())

    mx.reset_peak_memory()
    return {"step_s": timed(step, steps), "peak_gb": mx.get_peak_memory() / 1e9}


def run_torch(config: dict, frames: int, condition: int, steps: int, rank: int) -> dict:
    import peft
    import torch
    from diffusers import AceStepTransformer1DModel

    torch.manual_seed(0)
    dit = AceStepTransformer1DModel(**config)
    model = peft.get_peft_model(
        dit,
        peft.LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.1, target_modules=["to_q", "to_k", "to_v", "to_out.0"]
        ),
    )
    x, context, states = (torch.from_numpy(a) for a in inputs(config, frames, condition))
    noise = torch.randn_like(x)
    t = torch.tensor([0.75])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)

    def step():
        xt = t * noise + (1 - t) * x
        v = model.get_base_model()(
            hidden_states=xt,
            timestep=t,
            timestep_r=t,
            encoder_hidden_states=states,
            context_latents=context,
            return_dict=False,
        )[0]
        loss = torch.mean((v - (noise - x)) ** 2)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()

    return {"step_s": timed(step, steps), "peak_gb": None}


def child(args) -> None:
    config = decoder_config(REAL_2B, TINY, args.tiny, args.layers)
    if args.side.startswith("mlx"):
        variant = args.side.split("-", 1)[1] if "-" in args.side else "f32"
        result = run_mlx(config, variant, args.frame, args.condition, args.steps, args.rank)
    else:
        result = run_torch(config, args.frame, args.condition, args.steps, args.rank)
    report(scale_to_all_layers(result, args.layers, REAL_2B["num_hidden_layers"]))


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", default="750", help="comma list of crop lengths T (25 Hz; 750 = 30 s)")
    p.add_argument(
        "--sides",
        default="mlx,torch",
        help="mlx, mlx-eager (the step without mx.compile), mlx-nockpt (no gradient checkpointing), mlx-bf16, "
        "mlx-q8, mlx-q4, torch",
    )
    p.add_argument("--rank", type=int, default=64)
    add_step_arguments(p)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    print(step_header(args, f"decoder, LoRA rank {args.rank} on all attention projections"))
    extra = step_child_arguments(args, "--rank", str(args.rank))
    return step_table(__file__, [int(f) for f in args.frames.split(",")], args.sides.split(","), extra, audio="crop")


if __name__ == "__main__":
    main()
