"""One optimisation step: the sum of its micro-batches' gradients, then the clipped AdamW update, compiled or eager.

A step's gradient is the mean of its `grad_accum` micro-batch gradients, so a step of k micro-batches of b clips
makes the same update as one micro-batch of k·b clips (the loss is a mean over equally sized micro-batches): the
tests hold the trainer to that. Each micro-batch is evaluated as it comes (so only one micro-batch's activations
live at a time) without reading anything back: the losses stay arrays until the step's one read, which the finite
check needs anyway, before the update touches the adapter.

Compiled (`compiling.enabled("train_step")`), the forward and backward of a micro-batch with the accumulation, and
the clip with the AdamW update, are each one traced graph with the model's and the optimizer's state as their
inputs and outputs, as mlx-lm compiles its trainer's step; the adapter's dropout keys are part of that state, so
every micro-batch draws its own masks.
"""

from __future__ import annotations

import math
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from .. import compiling
from ..errors import AceStepError
from .config import TrainConfig
from .objective import flow_loss


class TrainStep:
    """`gradients(batches)` sums a step's micro-batch gradients and losses; `update(...)` applies their mean."""

    def __init__(self, decoder: nn.Module, optimizer: optim.Optimizer, config: TrainConfig):
        self.decoder, self.optimizer, self.config = decoder, optimizer, config
        value_and_grad = nn.value_and_grad(decoder, lambda *batch: flow_loss(decoder, *batch))

        def first(batch):
            return value_and_grad(*batch)

        def more(batch, loss, grads):
            new_loss, new_grads = value_and_grad(*batch)
            return loss + new_loss, tree_map(mx.add, grads, new_grads)

        # the compiled update needs the state's whole structure before its first trace (a resumed state is kept)
        optimizer.init(decoder.trainable_parameters())
        state = [decoder.state, optimizer.state]
        if compiling.enabled("train_step"):  # value_and_grad puts its own parameter arrays in the model: the state is an output too
            compiled = partial(mx.compile, inputs=decoder.state, outputs=decoder.state)
            first, more = (compiling.restoring(decoder, compiled(f)) for f in (first, more))
            self._apply = compiling.restoring(decoder, partial(mx.compile, inputs=state, outputs=state)(self._apply))
        self._first, self._more = first, more

    def gradients(self, batches) -> tuple[mx.array, dict]:
        """The sums of the loss and the gradient over `batches` (each evaluated as it comes, nothing read back).
        `batches` yields (x0, noise, t, context, states) tuples, after setting whatever each one needs."""
        loss = grads = None
        for batch in batches:
            loss, grads = self._first(batch) if grads is None else self._more(batch, loss, grads)
            mx.eval(loss, grads)
        return loss, grads

    def update(self, step: int, grads, loss_sum: float) -> float:
        """Apply the mean of a step's summed gradient (after the finite check and the clip); the loss's mean is
        returned (the one read of the step, with the gradient's norm)."""
        accum = self.config.grad_accum
        loss_value = loss_sum / accum
        grads = tree_map(lambda g: g / accum, grads)
        norm = optim.clip_grad_norm(grads, math.inf)[1].item()
        if not math.isfinite(loss_value) or not math.isfinite(norm):  # before the update: the adapter stays finite
            what = f"the loss is {loss_value}" if not math.isfinite(loss_value) else f"the gradient norm is {norm}"
            raise AceStepError(f"step {step + 1}: {what} (try a lower --lr); the last checkpoint is kept")
        self._apply(grads)
        mx.eval(self.decoder.trainable_parameters(), self.optimizer.state)
        return loss_value

    def _apply(self, grads) -> None:
        clip = self.config.grad_clip
        self.optimizer.update(self.decoder, optim.clip_grad_norm(grads, clip)[0] if clip else grads)
