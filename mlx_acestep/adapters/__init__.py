"""LoRA and LoKr adapters on the DiT decoder: read the formats users have, apply them beside any base (float or
quantized), several at once, each with its own scale, or merge them into the weights."""

from ..errors import AdapterError
from .formats import Adapter, read_adapter
from .stack import AdaptedLinear, AdapterStack, check_scale, parse_lora_spec, targets

__all__ = [
    "Adapter",
    "AdapterError",
    "AdaptedLinear",
    "AdapterStack",
    "check_scale",
    "parse_lora_spec",
    "read_adapter",
    "targets",
]
