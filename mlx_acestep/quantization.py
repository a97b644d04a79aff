"""Per-layer quantization, recorded the way mlx-lm records it, so that loading rebuilds it exactly.

The converter decides layer by layer (`quantization_plan`): a linear or embedding
layer whose input width divides by the group size is quantized, unless its path
names a layer the model keeps at full precision; layers it keeps at 8 bits at
least get max(bits, 8). The `config.json` block is mlx-lm's: the default
`group_size`, `bits` and `mode`, plus an entry per path that differs
(`{"group_size": 64, "bits": 8}`). Loading follows mlx-lm's rule too: a path with
an entry takes it, any other layer is quantized exactly when the weights hold its
`scales`. So a converted planner LM loads with `mlx_lm.load` as well.
Convolutions have no quantized form in MLX, so the VAE never has quantized layers.
"""

from __future__ import annotations

import mlx.nn as nn

from .errors import AceStepError

MODES = {"none": None, "q8": 8, "q4": 4}  # the names of limits.QUANTIZE_CHOICES
MODE = "affine"


def recorded_mode(block: dict | None) -> str | None:
    """The converter's name ("q8", "q4") of a folder's recorded `quantization` block; None when it has none."""
    if not isinstance(block, dict):
        return None
    names = {bits: name for name, bits in MODES.items() if bits}
    return names.get(block.get("bits"), f"{block.get('bits')}-bit")


def quantizable(path: str, module: nn.Module, group_size: int, keep: tuple[str, ...] = ()) -> bool:
    """A layer MLX can quantize, whose input width divides by the group size, and not a kept-precision layer."""
    if not hasattr(module, "to_quantized") or "weight" not in module:
        return False
    if module["weight"].shape[-1] % group_size:
        return False
    return not any(k in path for k in keep)


def quantization_plan(
    model: nn.Module, bits: int, group_size: int, keep: tuple[str, ...] = (), at_least_8: tuple[str, ...] = ()
) -> dict[str, int]:
    """{layer path: bits} of every layer to quantize (the model is not touched)."""
    plan = {}
    for path, module in model.named_modules():
        if path and quantizable(path, module, group_size, keep):
            plan[path] = 8 if bits < 8 and any(k in path for k in at_least_8) else bits
    return plan


def quantization_config(plan: dict[str, int], bits: int, group_size: int) -> dict:
    """The `quantization` block of config.json (mlx-lm's format) for a plan."""
    block = {"group_size": group_size, "bits": bits, "mode": MODE}
    for path, b in sorted(plan.items()):
        if b != bits:
            block[path] = {"group_size": group_size, "bits": b, "mode": MODE}
    return block


def quantize_model(
    model: nn.Module, bits: int, group_size: int, keep: tuple[str, ...] = (), at_least_8: tuple[str, ...] = ()
) -> dict:
    """Quantize in place (as the converter would); return the config block."""
    plan = quantization_plan(model, bits, group_size, keep, at_least_8)
    nn.quantize(
        model,
        group_size=group_size,
        bits=bits,
        mode=MODE,
        class_predicate=lambda p, m: p in plan and {"group_size": group_size, "bits": plan[p], "mode": MODE},
    )
    return quantization_config(plan, bits, group_size)


def apply_recorded_quantization(model: nn.Module, block: dict | None, weight_keys, source: str) -> None:
    """Rebuild the quantized structure recorded in `block` before loading weights (mlx-lm's rule, see above)."""
    if not block:
        return
    try:
        group_size, bits, mode = int(block["group_size"]), int(block["bits"]), str(block.get("mode", MODE))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise AceStepError(f"{source}: malformed 'quantization' block") from None
    keys = set(weight_keys)

    def predicate(path, module):
        if path in block:
            return block[path]
        if not hasattr(module, "to_quantized"):
            return False
        return f"{path}.scales" in keys

    try:
        nn.quantize(model, group_size=group_size, bits=bits, mode=mode, class_predicate=predicate)
    except (TypeError, ValueError) as e:
        raise AceStepError(f"{source}: malformed 'quantization' block ({e})") from None
