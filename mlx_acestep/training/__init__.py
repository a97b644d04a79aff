"""Training LoRA adapters for the DiT decoder in MLX: `train_lora(dataset, output, TrainConfig(...))`.

The names are imported on first use, so reading `TrainConfig`'s defaults (the command line's --help) loads no MLX.
"""

import importlib

_EXPORTS = {
    "TrainConfig": ".config",
    "TrainProgress": ".trainer",
    "TrainingStopped": ".trainer",
    "train_lora": ".trainer",
    "Clip": ".dataset",
    "scan_dataset": ".dataset",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
