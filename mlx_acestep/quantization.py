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


def quantize_model(
    model: nn.Module, bits: int, group_size: int, keep: tuple[str, ...] = (), at_least_8: tuple[str, ...] = ()
) -> dict:
    """Quantize in place; return the `quantization` block to record in config.json.

    Layers whose path contains one of `keep` stay at full precision; those containing
    one of `at_least_8` get max(bits, 8) (recorded per layer under `layer_bits`).
    """
    chosen: list[str] = []
    layer_bits: dict[str, int] = {}

    def predicate(path, module):
        if not quantizable(path, module, group_size, keep):
            return False
        chosen.append(path)
        if bits < 8 and any(k in path for k in at_least_8):
            layer_bits[path] = 8
            return {"group_size": group_size, "bits": 8}
        return True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
    block = {"bits": bits, "group_size": group_size, "layers": sorted(chosen)}
    if layer_bits:
        block["layer_bits"] = dict(sorted(layer_bits.items()))
    return block


def apply_recorded_quantization(model: nn.Module, block: dict | None, source: str) -> None:
    """Rebuild the quantized structure recorded by the converter (before loading weights)."""
    if not block or not block.get("layers"):
        return
    try:
        bits, group_size, layers = int(block["bits"]), int(block["group_size"]), set(block["layers"])
        layer_bits = {str(k): int(v) for k, v in (block.get("layer_bits") or {}).items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise AceStepError(f"{source}: malformed 'quantization' block") from None

    def predicate(path, module):
        if path not in layers:
            return False
        return {"group_size": group_size, "bits": layer_bits[path]} if path in layer_bits else True

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=predicate)
