"""Data-parallel training across ranks (`mlx.launch ... mlx-acestep train`), as mlx-lm's tuner does it: each rank
computes the gradients of its share of a step's micro-batches, `nn.average_gradients` combines them, and every rank
applies the same update to its own copy of the adapter (one optimizer state, kept equal by equal inputs).

A step is the same at every world size: its micro-batches are drawn from (seed, step, j) as on one machine, and the
unit a rank takes is a whole micro-batch (its clips are padded and its noise drawn together: splitting one would
change the step). So the world size must divide --grad-accum, the learning rate needs no scaling (the global batch
does not change with the ranks), and a run saved at one world size resumes at any other that divides it."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from .. import distributed
from ..errors import AceStepError
from .config import TrainConfig
from .state import resume_hint


def check_world(config: TrainConfig, ranks: int) -> None:
    if config.grad_accum % ranks:
        raise AceStepError(
            f"{ranks} ranks cannot share a step of --grad-accum {config.grad_accum}: each rank takes whole "
            f"micro-batches, so give a --grad-accum that {ranks} divides (a resumed run keeps its own: resume it "
            "on a number of ranks that divides it)"
        )


def my_micro_batches(config: TrainConfig) -> range:
    """The micro-batches of each step this rank computes."""
    return range(distributed.rank(), config.grad_accum, distributed.size())


def combine(grads, loss_sum: float, step: int, output):
    """The sums over all ranks of the step's micro-batch gradients and losses, from this rank's sums (the scale
    one rank's loop has: the caller divides by --grad-accum either way)."""
    ranks = distributed.size()
    if ranks == 1:
        return grads, loss_sum
    then = "; " + resume_hint(output)  # what the watcher says if a lost rank ends this one
    with distributed.collective(f"training step {step + 1}", distributed.step_patience(), then):
        # the ranks' mean, times the ranks: exact for a power of two, within float32 rounding otherwise
        grads = tree_map(lambda g: g * ranks, nn.average_gradients(grads, distributed.world()))
        loss = mx.distributed.all_sum(mx.array(loss_sum, mx.float32), group=distributed.world(), stream=mx.cpu)
        mx.eval(grads, loss)
    return grads, loss.item()


def effective_batch(config: TrainConfig) -> str:
    """What one optimisation step averages over, and on how many ranks (printed at the start of a run)."""
    ranks = distributed.size()
    per = f"; {config.grad_accum // ranks} per rank on {ranks} ranks" if ranks > 1 else ""
    return (
        f"effective batch {config.batch * config.grad_accum} clips per step ({config.grad_accum} micro-batches of "
        f"{config.batch}{per}); learning rate {config.lr:g} (not scaled: the global batch does not change with "
        "the ranks)"
    )
