"""ACE-Step 1.5 in MLX.

    from mlx_acestep import ACEStep
    pipe = ACEStep.from_pretrained("ACE-Step/Ace-Step1.5")
    pipe.generate("gentle piano", duration=30, seed=7).save("piano.wav")

The names below are imported on first use, so `import mlx_acestep` (and the
command line's `--help`) stays fast: mlx-lm and transformers load only when a
model does.
"""

import importlib

__version__ = "0.8.0"

_EXPORTS = {
    "ACEStep": "mlx_acestep.pipeline",
    "GenerationRequest": "mlx_acestep.pipeline",
    "GenerationResult": "mlx_acestep.pipeline",
    "Progress": "mlx_acestep.pipeline",
    "Cancelled": "mlx_acestep.pipeline",
    "SongSheet": "mlx_acestep.pipeline",
    "AceStepError": "mlx_acestep.errors",
    "AdapterError": "mlx_acestep.adapters",
    "load_component": "mlx_acestep.loading",
    "AutoencoderOobleck": "mlx_acestep.models.vae",
    "OobleckConfig": "mlx_acestep.models.vae",
    "convert_checkpoints": "mlx_acestep.convert",
    "ConvertOptions": "mlx_acestep.convert",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlx_acestep' has no attribute {name!r}")
