"""The weight deltas adapters add to a linear layer, as side paths (`delta(x)`) and as dense matrices (`dense()`).

A LoRA pair is `scale · B @ A` with `scale = alpha / r` (`alpha / sqrt(r)` with rsLoRA); a LoKr is
`scale · kron(w1, w2)` (each factor optionally a low-rank product). Both are applied to `x` without forming
the dense `[out, in]` matrix, so an adapter costs its own size in memory and a few rank-r matmuls per call.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class LoRADelta(nn.Module):
    """`scale · B @ A`; `down` is A `[r, in]`, `up` is B `[out, r]` (PEFT's lora_A / lora_B). With DoRA's
    `magnitude` `[out]`, the layer's output rows are rescaled to `magnitude / ||W + scale · B @ A||` (PEFT)."""

    def __init__(self, down: mx.array, up: mx.array, scale: float, magnitude: mx.array | None = None):
        super().__init__()
        self.down, self.up = down, up
        self.scale = float(scale)  # the file's alpha / r; the user's scale comes with each call (`strength`)
        self.dropout = 0.0  # training only: dropout on the adapter's input (PEFT's lora_dropout)
        # The dropout mask's key (underscored, so not a parameter, but part of `state`: a compiled training step
        # reads the key each micro-batch sets): a checkpointed layer recomputes its forward in the backward pass,
        # and only a mask drawn from the same key there gives the gradient of the forward's loss.
        self._dropout_key: mx.array | None = None
        if magnitude is not None:
            self.magnitude = magnitude

    def set_dropout_key(self, key: mx.array) -> None:
        """The key of the dropout mask of the next forward (and of its recomputation in the backward pass)."""
        self._dropout_key = key

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.up.shape[0]), int(self.down.shape[1])

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def __call__(self, x: mx.array, strength: float = 1.0) -> mx.array:
        if self.dropout and self.training:
            x = (
                x
                * mx.random.bernoulli(1 - self.dropout, x.shape, key=self._dropout_key).astype(x.dtype)
                / (1 - self.dropout)
            )
        # the scale multiplies the rank-r intermediate, not the [.., out] result: one pass over r columns. The
        # factors compute in x's dtype: applied, they already are (no-op casts); trained, they stay float32
        down, up = self.down.astype(x.dtype), self.up.astype(x.dtype)
        return ((x @ down.T) * (self.scale * strength)) @ up.T

    def dense(self) -> mx.array:
        return (self.up.astype(mx.float32) @ self.down.astype(mx.float32)) * self.scale

    def cast(self, dtype: mx.Dtype) -> None:
        if self.down.dtype != dtype:  # apply() runs before every generation: no fresh copies when nothing changes
            self.down, self.up = self.down.astype(dtype), self.up.astype(dtype)

    def dora_gain(self, weight: mx.array, strength: float) -> mx.array:
        """DoRA's per-output-row gain for the dense base `weight` at this strength (PEFT: the norm is a constant)."""
        merged = weight.astype(mx.float32) + self.dense() * strength
        return self.magnitude.astype(mx.float32) / mx.sqrt(mx.sum(merged * merged, axis=1))


class LoKrDelta(nn.Module):
    """`scale · kron(w1, w2)` with w1 `[a, b]`, w2 `[c, d]` (the layer is `[a·c, b·d]`); either factor may be given
    as a low-rank pair (`w*_a @ w*_b`), as LyCORIS stores them."""

    def __init__(self, w1: tuple[mx.array, ...], w2: tuple[mx.array, ...], scale: float):
        super().__init__()
        self.w1, self.w2 = list(w1), list(w2)  # one full matrix, or the (a, b) pair of a low-rank product
        self.scale = float(scale)  # the file's alpha / r (1 with both factors full); the user's comes with each call

    @staticmethod
    def _full(parts: list[mx.array]) -> mx.array:
        return parts[0] if len(parts) == 1 else parts[0] @ parts[1]

    @staticmethod
    def _dims(parts: list[mx.array]) -> tuple[int, int]:
        return int(parts[0].shape[0]), int(parts[-1].shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        (a, b), (c, d) = self._dims(self.w1), self._dims(self.w2)
        return a * c, b * d

    @property
    def rank(self) -> int | None:
        ranks = [int(p[0].shape[1]) for p in (self.w1, self.w2) if len(p) == 2]
        return max(ranks) if ranks else None

    def __call__(self, x: mx.array, strength: float = 1.0) -> mx.array:
        # kron(w1, w2) @ x for x viewed as [.., b, d]: w1 @ X @ w2^T, then [.., a, c] -> [.., a·c]
        (a, b), (c, d) = self._dims(self.w1), self._dims(self.w2)
        w1, w2 = self._full(self.w1), self._full(self.w2)
        xs = x.reshape(*x.shape[:-1], b, d)
        y = (w1 * (self.scale * strength)) @ (xs @ w2.T)  # the scale on the small factor
        return y.reshape(*x.shape[:-1], a * c)

    def dense(self) -> mx.array:
        w1, w2 = self._full(self.w1).astype(mx.float32), self._full(self.w2).astype(mx.float32)
        (a, b), (c, d) = w1.shape, w2.shape
        return (w1[:, None, :, None] * w2[None, :, None, :]).reshape(a * c, b * d) * self.scale

    def cast(self, dtype: mx.Dtype) -> None:
        if self.w1[0].dtype != dtype:
            self.w1 = [p.astype(dtype) for p in self.w1]
            self.w2 = [p.astype(dtype) for p in self.w2]


Delta = LoRADelta | LoKrDelta
