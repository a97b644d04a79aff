"""Per-layer quantization that the loader can replay exactly.

The converter decides layer by layer (a predicate) and records the chosen
paths in `config.json`; the loader quantizes exactly those paths before it
loads weights, as mlx-lm's loader does. Convolutions have no quantized form in
MLX, so the VAE never has quantized layers.
"""

from __future__ import annotations

import mlx.nn as nn

from .errors import AceStepError

MODES = {"none": None, "q8": 8, "q4": 4}


def quantizable(path: str, module: nn.Module, group_size: int, keep: tuple[str, ...] = ()) -> bool:
    """A layer MLX can quantize, whose input width divides by the group size, and not a kept-precision layer."""
    if not hasattr(module, "to_quantized") or not hasattr(module, "weight"):
        return False
    if module.weight.shape[-1] % group_size:
        return False
    return not any(k in path for k in keep)


def quantize_model(model: nn.Module, bits: int, group_size: int, keep: tuple[str, ...] = ()) -> dict:
    """Quantize in place; return the `quantization` block to record in config.json."""
    chosen: list[str] = []

    def predicate(path, module):
        ok = quantizable(path, module, group_size, keep)
        if ok:
            chosen.append(path)
        return ok

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    return {"bits": bits, "group_size": group_size, "layers": sorted(chosen)}


def apply_recorded_quantization(model: nn.Module, block: dict | None, source: str) -> None:
    """Rebuild the quantized structure recorded by the converter (before loading weights)."""
    if not block or not block.get("layers"):
        return
    try:
        bits, group_size, layers = int(block["bits"]), int(block["group_size"]), set(block["layers"])
    except (KeyError, TypeError, ValueError):
        raise AceStepError(f"{source}: malformed 'quantization' block") from None
    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=lambda p, m: p in layers)
