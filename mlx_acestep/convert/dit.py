"""ACE-Step DiT checkpoint (`acestep-v15-*/model.safetensors`) -> MLX.

The checkpoint holds the decoder, the condition encoder, the FSQ audio
tokenizer and detokenizer, and the bare `null_condition_emb`; `AceStepModel`
uses the same names. The one remap is the pair of patch convolutions, stored
as linear maps over frame pairs (spec 2.5):

    decoder.proj_in.1.weight   [D, 192, 2] -> decoder.proj_in.weight  [D, 2*192]
    decoder.proj_out.1.weight  [D, 64, 2]  -> decoder.proj_out.weight [2*64, D]
    decoder.proj_out.1.bias    [64]        -> decoder.proj_out.bias   [2*64] (once per frame)

Tensors are read as MLX arrays in their stored dtype (bf16 in the real files)
and cast straight to the target dtype, never widened on the way.

Other source layouts (the diffusers pipeline, `diffusers_layout.py`) rebuild
this layout's state dict and config and end in the same `write_dit`.

The silence latent ships beside the weights: `silence_latent.pt` (a torch
pickle, read without torch) in the real checkpoints, `silence_latent.safetensors`
in the fixtures, both channel-first `[1, C, T]`. It is written channel-last
`[1, T, C]` in float32 whatever the weights' dtype (spec 4: it is tiny).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import mlx.core as mx
import numpy as np

from ..models.dit import AceStepConfig
from ..errors import AceStepError
from ..loading import SILENCE_FILE, dit_parts, load_checked, load_safetensors, read_json
from ..models.dit import AceStepModel
from ..safetensors_io import read_safetensors

from .common import ConvertOptions, cast_and_quantize, write_component
from .torch_pickle import read_torch_tensors

# Full precision: input projections, the FSQ projections (they decide the codes), the patch maps.
KEEP_FULL_PRECISION = ("embed_tokens", "quantizer", "proj_in", "proj_out", "audio_acoustic_proj")
# At least 8 bits: the timestep embedders and their AdaLN projection.
AT_LEAST_8_BITS = ("time_embed",)

PATCH_RENAMES = {
    "decoder.proj_in.1.weight": "decoder.proj_in.weight",
    "decoder.proj_in.1.bias": "decoder.proj_in.bias",
    "decoder.proj_out.1.weight": "decoder.proj_out.weight",
    "decoder.proj_out.1.bias": "decoder.proj_out.bias",
}


def dit_to_mlx(state: dict[str, mx.array], patch_size: int) -> dict[str, mx.array]:
    out = {}
    for key, value in state.items():
        if key.endswith("rotary_emb.inv_freq"):  # recomputed, never loaded
            continue
        name = PATCH_RENAMES.get(key, key)
        if key == "decoder.proj_in.1.weight" and value.ndim == 3:  # [D, C, K] -> [D, K*C]
            value = value.transpose(0, 2, 1).reshape(value.shape[0], -1)
        elif key == "decoder.proj_out.1.weight" and value.ndim == 3:  # [D, C, K] -> [K*C, D]
            value = value.transpose(2, 1, 0).reshape(-1, value.shape[0])
        elif key == "decoder.proj_out.1.bias":
            value = mx.tile(value, (patch_size,))
        out[name] = value
    return out


def source_key_hint(mlx_key: str) -> str:
    source = {v: k for k, v in PATCH_RENAMES.items()}.get(mlx_key, mlx_key)
    return f"'{source}'"


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


def load_weight_files(folder: Path, name: str = "model.safetensors") -> tuple[dict[str, mx.array], list[Path]]:
    """`name`, or the shards named by `<name>.index.json` (XL checkpoints and diffusers folders may be sharded)."""
    index = folder / f"{name}.index.json"
    if not index.is_file():
        return load_safetensors(folder / name), [folder / name]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise AceStepError(f"{index}: no 'weight_map'")
    shards = sorted({folder / name for name in weight_map.values()})
    state: dict[str, mx.array] = {}
    for shard in shards:
        tensors = load_safetensors(shard)
        unlisted = sorted(k for k in tensors if weight_map.get(k) != shard.name)
        if unlisted:
            raise AceStepError(f"{shard}: key '{unlisted[0]}' is not listed for this shard in {index.name}")
        state.update(tensors)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise AceStepError(f"{index}: key '{missing[0]}' is listed but in no shard")
    return state, [index, *shards]


def convert_dit(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    fields = read_json(config_path)
    state, weight_files = load_weight_files(folder)
    silence, silence_path = read_silence_latent(folder, AceStepConfig.from_dict(fields).timbre_hidden_dim)
    sources = [config_path, *weight_files, silence_path]
    return write_dit(out, fields, state, silence, sources, opts, root, str(weight_files[0]), source_key_hint)


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
) -> str:
    """Convert an original-layout state dict (any source layout ends here) and write the DiT folder.

    `state` is emptied once remapped, so the source arrays are freed before casting. The parts the
    folder holds follow `fields["absent_parts"]`; `source` and `hint` name the source in key errors.
    """
    cfg = AceStepConfig.from_dict(fields)
    model = AceStepModel(cfg, parts=dit_parts(fields, None))
    weights = dit_to_mlx(state, cfg.patch_size)
    state.clear()
    load_checked(model, weights, source, hint=hint)
    del weights
    quantization, summary = cast_and_quantize(model, opts, keep=KEEP_FULL_PRECISION, at_least_8=AT_LEAST_8_BITS)
    write_component(out, "dit", model, fields, opts, quantization, sources, root)
    mx.save_safetensors(str(out / SILENCE_FILE), {"silence_latent": mx.array(silence)})
    kind = "XL" if cfg.is_xl else "2B"
    fsq = "FSQ tokenizer/detokenizer" if {"tokenizer", "detokenizer"} <= set(model.parts) else "no FSQ tokenizer/detokenizer"
    return f"{kind} DiT, condition encoder, {fsq} ({summary}), silence latent {silence.shape[1]} frames"
