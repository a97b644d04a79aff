"""ACE-Step DiT checkpoint (`acestep-v15-*/model.safetensors`) -> MLX.

The checkpoint holds the decoder, the condition encoder, the FSQ audio
tokenizer and detokenizer, and the bare `null_condition_emb`; the MLX model
(`AceStepModel`) uses the same names, so the remap is the identity. Only the
condition encoder and `null_condition_emb` are built so far: the other
prefixes are reported as not converted yet (issue 4).

The silence latent ships beside the weights: `silence_latent.pt` (a torch
pickle, read without torch) in the real checkpoints, `silence_latent.safetensors`
in the fixtures, both channel-first `[1, C, T]`. It is written channel-last
`[1, T, C]` in float32 whatever the weights' dtype (spec 4: it is tiny).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_acestep.condition import AceStepConfig, AceStepModel
from mlx_acestep.errors import AceStepError
from mlx_acestep.loading import SILENCE_FILE, load_checked, read_json
from mlx_acestep.safetensors_io import read_safetensors

from .common import ConvertOptions, cast_and_quantize, write_component
from .torch_pickle import read_torch_tensors

BUILT_PREFIXES = ("encoder.", "null_condition_emb")
PENDING_PREFIXES = ("decoder.", "tokenizer.", "detokenizer.")  # issue 4


SILENCE_SOURCES = ("silence_latent.pt", "silence_latent.safetensors")


def read_silence_latent(folder: Path, channels: int) -> tuple[np.ndarray, Path]:
    """The checkpoint's silence latent as float32 `[1, T, channels]`, and the file it came from."""
    path = next((folder / n for n in SILENCE_SOURCES if (folder / n).is_file()), None)
    if path is None:
        raise AceStepError(f"{folder}: missing {SILENCE_SOURCES[0]} (the DiT checkpoint's silence latent)")
    tensors = read_torch_tensors(path) if path.suffix == ".pt" else read_safetensors(path)
    if len(tensors) != 1:
        raise AceStepError(f"{path}: expected one tensor, found {len(tensors)} ({', '.join(map(repr, tensors))})")
    latent = next(iter(tensors.values()))
    if latent.ndim != 3 or latent.shape[0] != 1 or latent.shape[1] != channels:
        raise AceStepError(f"{path}: silence latent has shape {tuple(latent.shape)}, expected (1, {channels}, T)")
    return np.ascontiguousarray(latent.transpose(0, 2, 1), dtype=np.float32), path


def convert_dit(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    weights_path = folder / "model.safetensors"
    fields = read_json(config_path)
    model = AceStepModel(AceStepConfig.from_dict(fields))
    state = read_safetensors(weights_path)
    pending = [k for k in state if k.startswith(PENDING_PREFIXES)]
    weights = {k: v for k, v in state.items() if k.startswith(BUILT_PREFIXES)}
    unknown = {k: v for k, v in state.items() if not k.startswith(BUILT_PREFIXES + PENDING_PREFIXES)}
    load_checked(model, weights, str(weights_path), extra=unknown)  # an unknown prefix is an unexpected key
    # The input projections stay at full precision; null_condition_emb is a bare array, never quantized.
    quantization, summary = cast_and_quantize(model, opts, keep=("embed_tokens",))
    silence, silence_path = read_silence_latent(folder, model.config.timbre_hidden_dim)
    write_component(out, "dit", model, fields, opts, quantization, [config_path, weights_path, silence_path], root)
    mx.save_safetensors(str(out / SILENCE_FILE), {"silence_latent": mx.array(silence)})
    return f"condition encoder ({len(weights)} tensors, {summary}), silence latent {silence.shape[1]} frames; {len(pending)} decoder/FSQ tensors not converted yet"
