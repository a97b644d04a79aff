"""From a request to audio: the `ACEStep` facade and what it runs.

    acestep.py       the facade: from_pretrained, generate, the phases
    request.py       GenerationRequest: every validation, and what depends on the model family
    residency.py     which modules are loaded when (one role map for load and release), the phase meter
    results.py       Progress, Cancelled, GenerationResult
    sources.py       the editing tasks' recordings, read and VAE-encoded
    postprocess.py   peak limiting, splice, normalisation

The names below are imported on first use (the command line builds a request
before any model, and mlx-lm, is imported).
"""

import importlib

_EXPORTS = {
    "ACEStep": "acestep",
    "initial_noise": "acestep",
    "GenerationRequest": "request",
    "RequestError": "request",
    "GenerationResult": "results",
    "Generated": "results",
    "Progress": "results",
    "Cancelled": "results",
    "PhaseMeter": "residency",
    "ModelFolders": "..hub",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = _EXPORTS[name]
        target = importlib.import_module(
            f"mlx_acestep.{module[2:]}" if module.startswith("..") else f"{__name__}.{module}"
        )
        return getattr(target, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
