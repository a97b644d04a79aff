"""ACE-Step DiT checkpoint (`acestep-v15-*/`) -> MLX.

The checkpoint holds the decoder, the condition encoder, the FSQ audio
tokenizer and detokenizer, and the bare `null_condition_emb`; `AceStepModel`
uses the same names, and its `sanitize` remaps the patch convolutions. Other
source layouts (the diffusers pipeline, `diffusers_layout.py`) rebuild this
layout's state dict and config and end in the same `write_dit`.

The silence latent ships beside the weights: `silence_latent.pt` (a torch
pickle, read without torch) in the real checkpoints, `silence_latent.safetensors`
in the fixtures, both channel-first `[1, C, T]`. It is written channel-last
`[1, T, C]` in float32 whatever the weights' dtype (spec 4: it is tiny).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import AceStepError
from ..loading import SILENCE_FILE, dit_parts, read_json
from ..models.dit import AceStepConfig, AceStepModel
from ..safetensors_io import read_safetensors, read_weights
from .component import ConvertOptions, write_component
from .torch_pickle import read_torch_tensors

SILENCE_SOURCES = ("silence_latent.pt", "silence_latent.safetensors")


def read_silence_latent(folder: Path, channels: int) -> tuple[np.ndarray, Path]:
    """The checkpoint's silence latent as float32 `[1, T, channels]`, and the file it came from."""
    path = next((folder / n for n in SILENCE_SOURCES if (folder / n).is_file()), None)
    if path is None:
        raise AceStepError(f"{folder}: missing {SILENCE_SOURCES[0]} (the DiT checkpoint's silence latent)")
    return read_silence_file(path, channels), path


def read_silence_file(path: Path, channels: int) -> np.ndarray:
    """One channel-first `[1, channels, T]` tensor (`.pt` or `.safetensors`) as float32 `[1, T, channels]`."""
    tensors = read_torch_tensors(path) if path.suffix == ".pt" else read_safetensors(path)
    if len(tensors) != 1:
        raise AceStepError(f"{path}: expected one tensor, found {len(tensors)} ({', '.join(map(repr, tensors))})")
    latent = next(iter(tensors.values()))
    if latent.ndim != 3 or latent.shape[0] != 1 or latent.shape[1] != channels:
        raise AceStepError(f"{path}: silence latent has shape {tuple(latent.shape)}, expected (1, {channels}, T)")
    return np.ascontiguousarray(latent.transpose(0, 2, 1), dtype=np.float32)


def convert_dit(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    fields = read_json(config_path)
    state, weight_files = read_weights(folder, "model.safetensors")
    silence, silence_path = read_silence_latent(
        folder, AceStepConfig.from_dict(fields, str(config_path)).timbre_hidden_dim
    )
    sources = [config_path, *weight_files, silence_path]
    return write_dit(
        out,
        fields,
        state,
        silence,
        sources,
        opts,
        root,
        str(weight_files[0]),
        AceStepModel.source_name,
        str(config_path),
    )


def write_dit(
    out: Path,
    fields: dict,
    state: dict[str, mx.array],
    silence: np.ndarray,
    sources: list[Path],
    opts: ConvertOptions,
    root: Path,
    source: str,
    hint: Callable[[str], str],
    config_source: str = "config.json",
) -> str:
    """Convert an original-layout state dict (any source layout ends here) and write the DiT folder.

    `state` is emptied as it is written. The parts the folder holds follow `fields["absent_parts"]`;
    `source` and `hint` name the source in key errors, `config_source` the config in missing-key errors.
    """
    cfg = AceStepConfig.from_dict(fields, config_source)
    model = AceStepModel(cfg, parts=dit_parts(fields, None))
    weights = model.sanitize(state)
    state.clear()
    summary = write_component(out, "dit", model, weights, fields, opts, sources, root, source, hint)
    mx.save_safetensors(str(out / SILENCE_FILE), {"silence_latent": mx.array(silence)})
    kind = "XL" if cfg.is_xl else "2B"
    fsq = (
        "FSQ tokenizer/detokenizer"
        if {"tokenizer", "detokenizer"} <= set(model.parts)
        else "no FSQ tokenizer/detokenizer"
    )
    return f"{kind} DiT, condition encoder, {fsq} ({summary}), silence latent {silence.shape[1]} frames"
