"""From a request to audio: the `ACEStep` front over the engine (`mlx_acestep.engine`).

    acestep.py       the front: from_pretrained, generate, the worker thread, results
    request.py       GenerationRequest: every validation, and what depends on the model family
    prepare.py       request -> render job: sources encoded, the planner run, items, tokens, noise
    render.py        the phases after tokenization through the residency: text, condition, DiT, VAE
    residency.py     which modules are loaded when (the engine's part map for load and release), the phase meter
    adapters.py      the adapters loaded on the pipeline's decoder
    worker.py        the pipeline's own thread
    results.py       Progress, Cancelled, GenerationResult
    stream.py        generate_stream's window-by-window results, and which requests can stream
    postprocess.py   peak limiting, splice, normalisation
    songwriter.py    the planner's tasks (create_sample, format_sample, understand), generation that writes first

The names below are imported on first use (the command line builds a request
before any model, and mlx-lm, is imported).
"""

import importlib

_EXPORTS = {
    "ACEStep": "acestep",
    "initial_noise": "..engine",
    "GenerationRequest": "request",
    "RequestError": "request",
    "GenerationResult": "results",
    "Generated": "results",
    "Progress": "results",
    "Cancelled": "results",
    "item_paths": "results",
    "streamable": "stream",
    "SongSheet": "..planner.tasks",
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
