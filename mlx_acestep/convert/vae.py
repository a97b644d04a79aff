"""Oobleck VAE: diffusers weight-norm state dict -> MLX layout.

Every conv stores `weight_g` and `weight_v` (legacy `weight_norm`) or
`parametrizations.weight.original0/1` (newer torch). The effective weight
g * v / ||v|| (norm over all axes but axis 0 of the stored tensor, so per
*input* channel for ConvTranspose1d) is fused here in float64, then
Conv1d [out, in, k] -> [out, k, in] and ConvTranspose1d [in, out, k] ->
[out, k, in]. Snake parameters [1, C, 1] -> [C]. Names are otherwise kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AceStepError
from ..loading import load_checked, read_json
from ..models.vae import AutoencoderOobleck, OobleckConfig
from ..safetensors_io import read_safetensors

from .common import ConvertOptions, cast_and_quantize, write_component

_WN_SUFFIXES = {
    ".weight_g": "g",
    ".weight_v": "v",
    ".parametrizations.weight.original0": "g",
    ".parametrizations.weight.original1": "v",
}


def _split_weight_norm(key: str) -> tuple[str, str] | None:
    for suffix, part in _WN_SUFFIXES.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def fuse_weight_norm(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    v64 = v.astype(np.float64)
    norm = np.sqrt(np.sum(v64 * v64, axis=tuple(range(1, v.ndim)), keepdims=True))
    return (g.astype(np.float64) * v64 / norm).astype(np.float32)


def vae_to_mlx(state: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Remap a diffusers AutoencoderOobleck state dict; errors name the source key."""
    out: dict[str, np.ndarray] = {}
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        wn = _split_weight_norm(key)
        if wn is not None:
            pairs.setdefault(wn[0], {})[wn[1]] = value
        elif key.endswith((".alpha", ".beta")):
            if value.ndim != 3 or value.shape[0] != 1 or value.shape[2] != 1:
                raise AceStepError(f"{source}: key '{key}' has shape {value.shape}, expected [1, C, 1]")
            out[key] = np.asarray(value, dtype=np.float32).reshape(-1)
        elif key.endswith(".bias"):
            out[key] = np.asarray(value, dtype=np.float32)
        else:
            raise AceStepError(f"{source}: unexpected key '{key}'")
    for prefix, parts in pairs.items():
        for part, name in (("g", "weight_g"), ("v", "weight_v")):
            if part not in parts:
                raise AceStepError(f"{source}: missing key '{prefix}.{name}' (weight-norm pair incomplete)")
        g, v = parts["g"], parts["v"]
        if v.ndim != 3 or g.shape != (v.shape[0], 1, 1):
            raise AceStepError(f"{source}: key '{prefix}.weight_g' has shape {g.shape}, expected ({v.shape[0]}, 1, 1)")
        w = fuse_weight_norm(g, v)
        # ConvTranspose1d [in, out, k] -> [out, k, in]; Conv1d [out, in, k] -> [out, k, in]
        axes = (1, 2, 0) if prefix.rsplit(".", 1)[-1].startswith("conv_t") else (0, 2, 1)
        out[f"{prefix}.weight"] = np.ascontiguousarray(w.transpose(axes))
    return out


def source_key_hint(mlx_key: str) -> str:
    """The source tensor(s) an MLX key comes from, for error messages."""
    if mlx_key.endswith(".weight"):
        return f"'{mlx_key[:-7]}.weight_g' / '{mlx_key[:-7]}.weight_v'"
    return f"'{mlx_key}'"


def convert_vae(folder: Path, out: Path, opts: ConvertOptions, root: Path) -> str:
    config_path = folder / "config.json"
    weights_path = folder / "diffusion_pytorch_model.safetensors"
    fields = read_json(config_path)
    try:
        model = AutoencoderOobleck(OobleckConfig.from_dict(fields))
    except (TypeError, ValueError) as e:
        raise AceStepError(f"{config_path}: invalid VAE config ({e})") from None
    state = read_safetensors(weights_path)
    weights = vae_to_mlx(state, str(weights_path))
    load_checked(model, weights, str(weights_path), hint=source_key_hint)
    quantization, summary = cast_and_quantize(model, opts)
    write_component(out, "vae", model, fields, opts, quantization, [config_path, weights_path], root)
    return f"{len(state)} tensors -> {len(weights)} ({summary})"
