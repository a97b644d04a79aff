"""Trainable LoRA on the decoder: the layers training attaches and their dropout masks.

The adapter is this project's own `LoRADelta` side path (so what is trained is exactly what `--lora` applies):
A kaiming-uniform and B zero, as PEFT initialises them, dropout on the adapter's input while training. It is
saved as a PEFT folder by `adapters.peft` (the one module that reads and writes that format).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..adapters import Adapter, AdapterStack, targets
from ..adapters.deltas import LoRADelta
from ..adapters.peft import ATTENTION, PROJECTIONS


def lora_targets(decoder: nn.Module, kinds: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    pattern = re.compile(rf"layers\.\d+\.({'|'.join(ATTENTION[k] for k in kinds)})\.({'|'.join(PROJECTIONS)})$")
    return {p: s for p, s in targets(decoder).items() if pattern.fullmatch(p)}


def attach_lora(
    decoder: nn.Module, kinds: tuple[str, ...], rank: int, alpha: float, dropout: float, key: mx.array
) -> dict[str, LoRADelta]:
    """A fresh trainable LoRA on the decoder (the base frozen); returns its deltas by decoder path."""
    decoder.freeze()
    deltas = {}
    paths = lora_targets(decoder, kinds)
    keys = mx.random.split(key, max(len(paths), 1))
    for k, (path, (out, inp)) in zip(keys, sorted(paths.items())):
        bound = 1 / math.sqrt(inp)  # PEFT: kaiming_uniform_(a=sqrt(5)) on A is U(-1/sqrt(in), 1/sqrt(in))
        delta = LoRADelta(mx.random.uniform(-bound, bound, (rank, inp), key=k), mx.zeros((out, rank)), alpha / rank)
        delta.dropout = float(dropout)
        deltas[path] = delta
    stack = AdapterStack()
    stack.add_adapter(Adapter("training", Path("."), "peft", deltas))
    stack.apply(decoder)
    for delta in deltas.values():  # apply() cast them to the layers' dtype; the trained factors stay float32
        delta.down, delta.up = delta.down.astype(mx.float32), delta.up.astype(mx.float32)
        delta.unfreeze()
    return deltas


def seed_dropout(deltas: dict[str, LoRADelta], seed: int) -> None:
    """Fix every adapter layer's dropout mask for the next forward (and its recomputation in the backward pass)."""
    for delta, value in zip(deltas.values(), np.random.default_rng(seed).integers(0, 2**63, len(deltas))):
        delta.set_dropout_key(mx.random.key(int(value)))
