"""Checkpoint converter: official ACE-Step 1.5 PyTorch checkpoints -> MLX folders.

Imported as `mlx_acestep.convert`; run as `mlx-acestep convert SRC DST`.
Reads safetensors lazily with MLX and `.pt` tensors with a restricted unpickler (no torch, no pickle code run).
"""

from .component import ConvertOptions
from .converter import ConvertReport, convert_checkpoints

__all__ = ["ConvertOptions", "ConvertReport", "convert_checkpoints"]
