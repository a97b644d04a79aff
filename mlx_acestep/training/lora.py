"""Trainable LoRA on the decoder, and the PEFT folder it is saved as (the reference trainer's layout).

The adapter is this project's own `LoRADelta` side path (so what is trained is exactly what `--lora` applies):
A kaiming-uniform and B zero, as PEFT initialises them, dropout on the adapter's input while training.
Saved as `adapter_config.json` + `adapter_model.safetensors` with keys
`base_model.model.layers.{i}.{self_attn|cross_attn}.{q|k|v|o}_proj.lora_{A|B}.weight`, which this project,
the reference and ComfyUI load.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..adapters import Adapter, AdapterStack, targets
from ..adapters.deltas import LoRADelta
from ..adapters.stack import Entry
from ..errors import AceStepError
from ..files import atomic_file, write_text
from ..safetensors_io import read_safetensors

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ATTENTION = {"self": "self_attn", "cross": "cross_attn"}  # TrainConfig.targets -> module names


def lora_targets(decoder: nn.Module, kinds: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    pattern = re.compile(rf"layers\.\d+\.({'|'.join(ATTENTION[k] for k in kinds)})\.({'|'.join(PROJECTIONS)})$")
    return {p: s for p, s in targets(decoder).items() if pattern.fullmatch(p)}


def attach_lora(
    decoder: nn.Module, kinds: tuple[str, ...], rank: int, alpha: float, dropout: float, key: mx.array
) -> AdapterStack:
    """A fresh trainable LoRA on the decoder (the base frozen); returns the stack holding it."""
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
    stack.entries["training"] = Entry(Adapter("training", Path("."), "peft", deltas), 1.0)
    stack.apply(decoder)
    for delta in deltas.values():  # apply() cast them to the layers' dtype; the trained factors stay float32
        delta.down, delta.up = delta.down.astype(mx.float32), delta.up.astype(mx.float32)
        delta.unfreeze()
    return stack


def seed_dropout(stack: AdapterStack, seed: int) -> None:
    """Fix every adapter layer's dropout mask for the next forward (and its recomputation in the backward pass)."""
    deltas = stack.entries["training"].adapter.deltas
    for delta, value in zip(deltas.values(), np.random.default_rng(seed).integers(0, 2**63, len(deltas))):
        delta.dropout_seed = int(value)


def adapter_tensors(stack: AdapterStack) -> dict[str, np.ndarray]:
    out = {}
    for path, delta in stack.entries["training"].adapter.deltas.items():
        out[f"base_model.model.{path}.lora_A.weight"] = np.array(delta.down.astype(mx.float32))
        out[f"base_model.model.{path}.lora_B.weight"] = np.array(delta.up.astype(mx.float32))
    return out


def load_adapter_tensors(stack: AdapterStack, file: Path) -> None:
    state = read_safetensors(file)
    for path, delta in stack.entries["training"].adapter.deltas.items():
        try:
            down, up = (state[f"base_model.model.{path}.lora_{p}.weight"] for p in "AB")
        except KeyError as e:
            raise AceStepError(f"{file}: no {e.args[0]} (the checkpoint is damaged, or of another run)") from None
        if down.shape != delta.down.shape or up.shape != delta.up.shape:
            raise AceStepError(
                f"{file}: {path} has shapes {down.shape} / {up.shape}, this run's {delta.down.shape} / "
                f"{delta.up.shape} (the checkpoint is damaged, or of another run)"
            )
        delta.down, delta.up = mx.array(down).astype(delta.down.dtype), mx.array(up).astype(delta.up.dtype)


def peft_config(rank: int, alpha: float, dropout: float, kinds: tuple[str, ...], base_model: str) -> dict:
    if set(kinds) == set(ATTENTION):
        target = list(PROJECTIONS)
    else:  # PEFT takes a regex string for "these layers only"
        target = rf".*\.({'|'.join(ATTENTION[k] for k in kinds)})\.({'|'.join(PROJECTIONS)})"
    return {
        "peft_type": "LORA",
        "task_type": None,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": target,
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "base_model_name_or_path": base_model,
        "inference_mode": True,
        "fan_in_fan_out": False,
        "rank_pattern": {},
        "alpha_pattern": {},
        "modules_to_save": None,
    }


def save_peft_folder(folder: Path, stack: AdapterStack, config: dict, card: str) -> None:
    """adapter_config.json, adapter_model.safetensors and README.md into `folder` (each written atomically)."""
    from safetensors.numpy import save

    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "adapter_model.safetensors") as tmp:
        Path(tmp).write_bytes(save(adapter_tensors(stack), metadata={"format": "pt"}))
    write_text(folder / "adapter_config.json", json.dumps(config, indent=2))
    write_text(folder / "README.md", card)
