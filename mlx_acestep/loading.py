"""Load a converted MLX component folder strictly.

A folder written by `mlx-acestep convert` holds `config.json` (component,
layout version, dtype, quantization block, model fields), `model.safetensors`
(or shards listed in `model.safetensors.index.json`) in MLX layout and
`manifest.json`. Loading builds the module from the config, replays the recorded
quantization, then loads the weights: a missing or unexpected key or a wrong
shape is an error naming the key and the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .errors import BAD_JSON, AceStepError
from .models.dit import DIT_PARTS, AceStepConfig, AceStepModel
from .models.planner_lm import PlannerLM, planner_args
from .models.text_encoder import Qwen3TextEncoder, text_encoder_args
from .models.vae import AutoencoderOobleck, OobleckConfig
from .quantization import apply_recorded_quantization
from .safetensors_io import load_lazy, read_weights

LAYOUT_VERSION = 2  # 2: mlx-lm's quantization block, sharded weights
WEIGHTS_FILE = "model.safetensors"
SILENCE_FILE = "silence_latent.safetensors"  # beside a converted DiT's weights, [1, T, C] float32

# component name in config.json -> builder from that config, the `parts` wanted and the config's path (for errors)
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vae": lambda cfg, parts, source: AutoencoderOobleck(
        OobleckConfig.from_dict(cfg, source), with_encoder=parts is None or "encoder" in parts
    ),
    "text_encoder": lambda cfg, parts, source: Qwen3TextEncoder(text_encoder_args(cfg, source)),
    "dit": lambda cfg, parts, source: AceStepModel(AceStepConfig.from_dict(cfg, source), parts=dit_parts(cfg, parts)),
    "lm": lambda cfg, parts, source: PlannerLM(planner_args(cfg, source)),
}


def dit_parts(cfg: dict, wanted: tuple[str, ...] | None) -> tuple[str, ...]:
    """The DiT modules to build: those wanted (all by default) that the converted folder holds."""
    present = [p for p in DIT_PARTS if p not in cfg.get("absent_parts", ())]
    if wanted is None:
        return tuple(present)
    unknown = set(wanted) - set(DIT_PARTS)
    if unknown:
        raise AceStepError(f"unknown DiT part(s) {sorted(unknown)}; choose from {list(DIT_PARTS)}")
    return tuple(p for p in present if p in wanted)


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise AceStepError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
    except BAD_JSON as e:
        raise AceStepError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise AceStepError(f"{path}: expected a JSON object")
    return data


def check_weights(
    model: nn.Module, weights: dict[str, mx.array], source: str, hint: Callable[[str], str] | None = None
) -> None:
    """Raise a one-line error for the first missing, unexpected or mis-shaped key.

    `hint` names the source tensor(s) a key comes from, when the caller remapped them.
    """
    expected = dict(tree_flatten(model.parameters()))
    for k in sorted(expected):
        if k not in weights:
            raise AceStepError(f"{source}: missing key " + (hint(k) if hint else f"'{k}'"))
    for k in sorted(weights):
        if k not in expected:
            raise AceStepError(f"{source}: unexpected key '{k}'")
        if tuple(weights[k].shape) != tuple(expected[k].shape):
            raise AceStepError(
                f"{source}: key '{k}' has shape {tuple(weights[k].shape)}, expected {tuple(expected[k].shape)}"
            )
        # A float weight stored as integers loads and casts silently (garbage that sounds like a model); the
        # packed integers of a quantized layer are expected as integers (the layer was swapped before this check).
        floating = mx.issubdtype(weights[k].dtype, mx.floating)
        if floating != mx.issubdtype(expected[k].dtype, mx.floating):
            wanted = "a floating-point" if not floating else f"an integer ({expected[k].dtype})"
            name = hint(k) if hint else f"'{k}'"
            raise AceStepError(f"{source}: tensor {name} has dtype {weights[k].dtype}, expected {wanted} tensor")


def load_checked(model: nn.Module, weights: dict[str, mx.array], source: str) -> None:
    """Strictly load `weights` into `model`, with one-line errors naming the key and `source`."""
    check_weights(model, weights, source)
    model.load_weights(list(weights.items()), strict=True)


def load_component(folder: str | Path, component: str | None = None, parts: tuple[str, ...] | None = None) -> nn.Module:
    """Build and strictly load the converted component in `folder`.

    `parts` keeps only those top-level sub-modules (e.g. `("decoder",)` for a
    decode-only VAE); the file's other tensors are then not read at all, and
    every key of the kept parts is still required.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AceStepError(f"{folder}: model folder not found")
    config_path = folder / "config.json"
    cfg = read_json(config_path)
    version = cfg.get("layout_version")
    if version != LAYOUT_VERSION:
        raise AceStepError(
            f"{config_path}: layout_version {version!r} is not {LAYOUT_VERSION}; "
            "re-run `mlx-acestep convert` on the original checkpoint"
        )
    name = cfg.get("component")
    if component is not None and name != component:
        raise AceStepError(f"{config_path}: holds component {name!r}, expected {component!r}")
    if name not in BUILDERS:
        raise AceStepError(f"{config_path}: unknown component {name!r}")
    model = BUILDERS[name](cfg, parts, str(config_path))
    weights, files = read_weights(folder, WEIGHTS_FILE)
    if parts is not None:
        weights = {k: v for k, v in weights.items() if k.split(".", 1)[0] in parts}
    apply_recorded_quantization(model, cfg.get("quantization"), weights, str(config_path))
    load_checked(model, weights, str(files[0]))
    model.eval()
    mx.eval(model.parameters())
    return model


def load_silence_latent(folder: str | Path) -> mx.array:
    """A converted DiT folder's silence latent, float32 `[1, T, C]` ("silence" in latent space is not zeros)."""
    path = Path(folder) / SILENCE_FILE
    if not path.is_file():
        raise AceStepError(f"{path}: file not found (re-run `mlx-acestep convert` on the DiT checkpoint)")
    tensors = load_lazy(path)
    latent = tensors.get("silence_latent")
    if latent is None or latent.ndim != 3 or latent.shape[0] != 1:
        raise AceStepError(f"{path}: expected one tensor 'silence_latent' of shape (1, T, C)")
    latent = latent.astype(mx.float32)
    mx.eval(latent)  # materialised: an array still to compute belongs to this thread's stream, unusable from another
    return latent
